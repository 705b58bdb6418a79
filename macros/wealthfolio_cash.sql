{#- The cash an activity moves in Wealthfolio, in its currency, by Wealthfolio's own
    rules (docs/activities/activity-types.md, holdings_calculator.rs): BUY
    -(quantity x price + fee); SELL quantity x price - fee; DEPOSIT, DIVIDEND, INTEREST,
    CREDIT amount - fee; WITHDRAWAL -(amount + fee); FEE and TAX -fee when there is a
    fee, else -amount; a cash TRANSFER_IN +amount - fee, TRANSFER_OUT -(amount + fee);
    a transfer of shares only its fee; SPLIT none. Arguments are SQL expressions;
    `has_asset` says whether the activity names an instrument. -#}
{% macro wealthfolio_cash_effect(activity_type, quantity, unit_price, amount, fee, has_asset) -%}
    cast(
        case
            when {{ activity_type }} = 'BUY'
                then -(coalesce({{ quantity }} * {{ unit_price }}, 0) + coalesce({{ fee }}, 0))
            when {{ activity_type }} = 'SELL'
                then coalesce({{ quantity }} * {{ unit_price }}, 0) - coalesce({{ fee }}, 0)
            when {{ activity_type }} in ('DEPOSIT', 'DIVIDEND', 'INTEREST', 'CREDIT')
                then coalesce({{ amount }}, 0) - coalesce({{ fee }}, 0)
            when {{ activity_type }} = 'WITHDRAWAL'
                then -(coalesce({{ amount }}, 0) + coalesce({{ fee }}, 0))
            when {{ activity_type }} in ('FEE', 'TAX')
                then -(case
                    when coalesce({{ fee }}, 0) <> 0 then {{ fee }}
                    else coalesce({{ amount }}, 0)
                end)
            when {{ activity_type }} = 'TRANSFER_IN' and not {{ has_asset }}
                then coalesce({{ amount }}, 0) - coalesce({{ fee }}, 0)
            when {{ activity_type }} = 'TRANSFER_OUT' and not {{ has_asset }}
                then -(coalesce({{ amount }}, 0) + coalesce({{ fee }}, 0))
            when {{ activity_type }} in ('TRANSFER_IN', 'TRANSFER_OUT')
                then -coalesce({{ fee }}, 0)
            else 0
        end
        as {{ decimal_type() }}
    )
{%- endmacro %}
