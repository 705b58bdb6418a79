{#- One row per Wealthfolio activity a mapped IBKR corporate action row becomes (rules in
    int_ibkr__corporate_actions_classified): SPLIT; TRANSFER_OUT of an old line and
    TRANSFER_IN of a new line (sharing a sourceGroupId) at the carried cost; a SELL of a
    line bought out for cash; a CREDIT (or FEE) for the cash leg of a cash-and-stock
    deal; TRANSFER_IN of spun-off shares. Quantities and cash equal IBKR's. -#}
{#- The columns every leg keeps from its corporate action row. -#}
{% set leg_lineage -%}
legs.transaction_id,
        legs.action_id,
        legs.action_moment,
        legs.action_at_has_time,
        legs.action_at_zone,
        legs.resolved_action_type,
        legs.currency,
        legs.asset_category,
        legs.conid,
        legs.isin,
        legs.extract_id
{%- endset %}

with

corporate_actions as (

    select * from {{ ref('int_ibkr__corporate_actions_classified') }}
    where disposition = 'mapped'

),

-- The cost the old line carries into the new one: flexsync's average purchase cost of
-- the old shares less the cash paid out, else IBKR's market value of the new shares.
with_carried_cost as (

    select
        corporate_actions.*,
        sum(
            case
                when corporate_actions.quantity < 0
                    then cast(
                            corporate_actions.average_cost * abs(corporate_actions.quantity)
                            as {{ decimal_type() }}
                        )
            end
        ) over (
            partition by corporate_actions.broker_account_id, corporate_actions.action_group
        ) as old_line_cost,
        corporate_actions.new_line_rows = 0 and corporate_actions.group_cash > 0
            as is_cash_buyout
    from corporate_actions

),

legs as (

    select
        with_carried_cost.*,
        case
            when with_carried_cost.treatment in ('split', 'stock_dividend') then 'SPLIT'
            when coalesce(with_carried_cost.quantity, 0) = 0 and with_carried_cost.cash_proceeds > 0
                then 'CREDIT'
            when coalesce(with_carried_cost.quantity, 0) = 0 then 'FEE'
            when with_carried_cost.quantity < 0 and with_carried_cost.is_cash_buyout then 'SELL'
            when with_carried_cost.quantity < 0 then 'TRANSFER_OUT'
            else 'TRANSFER_IN'
        end as activity_type,
        case
            when with_carried_cost.quantity < 0 and with_carried_cost.is_cash_buyout
                then {{ decimal_ratio(
                    'with_carried_cost.cash_proceeds', 'with_carried_cost.quantity', 'ceil'
                ) }}
            when with_carried_cost.quantity < 0
                then coalesce(
                        with_carried_cost.average_cost,
                        {{ decimal_ratio(
                            'with_carried_cost.market_value', 'with_carried_cost.quantity'
                        ) }},
                        0
                    )
            when with_carried_cost.quantity > 0
                then coalesce(
                        case
                            when with_carried_cost.old_line_cost is not null
                                then {{ decimal_ratio(
                                'greatest(with_carried_cost.old_line_cost'
                                ~ ' - with_carried_cost.group_cash, 0)',
                                'with_carried_cost.quantity'
                            ) }}
                        end,
                        {{ decimal_ratio(
                            'with_carried_cost.market_value', 'with_carried_cost.quantity'
                        ) }},
                        0
                    )
        end as leg_unit_price
    from with_carried_cost

),

-- A change of line that also pays cash (cash-and-stock merger): the cash is its own leg.
cash_legs as (

    select
        legs.external_id || ':cash' as external_id,
        legs.broker_account_id,
        legs.source_row_key,
        'ibkr:ca:' || legs.action_group as source_group_id,
        case when legs.cash_proceeds > 0 then 'CREDIT' else 'FEE' end as activity_type,
        cast(null as varchar) as symbol,
        cast(null as varchar) as exchange_mic,
        cast(null as varchar) as quote_currency,
        cast(null as {{ decimal_type() }}) as quantity,
        cast(null as {{ decimal_type() }}) as unit_price,
        abs(legs.cash_proceeds) as amount,
        cast(0 as {{ decimal_type() }}) as fee,
        'Cash of corporate action ' || legs.resolved_action_type || ': '
        || coalesce(legs.description, '') as description,
        {{ leg_lineage }}
    from legs
    where
        legs.treatment = 'change_of_line'
        and legs.activity_type in ('TRANSFER_OUT', 'TRANSFER_IN')
        and legs.cash_proceeds <> 0

),

share_legs as (

    select
        legs.external_id,
        legs.broker_account_id,
        legs.source_row_key,
        case
            when legs.activity_type in ('TRANSFER_OUT', 'TRANSFER_IN')
                then 'ibkr:ca:' || legs.action_group
        end as source_group_id,
        legs.activity_type,
        case when legs.activity_type not in ('CREDIT', 'FEE') then legs.line_symbol end
            as symbol,
        case when legs.activity_type not in ('CREDIT', 'FEE') then legs.line_exchange_mic end
            as exchange_mic,
        case when legs.activity_type not in ('CREDIT', 'FEE') then legs.line_quote_currency end
            as quote_currency,
        case
            when legs.activity_type not in ('SPLIT', 'CREDIT', 'FEE') then abs(legs.quantity)
        end as quantity,
        case
            when legs.activity_type not in ('SPLIT', 'CREDIT', 'FEE') then legs.leg_unit_price
        end as unit_price,
        case
            when legs.activity_type = 'SPLIT' then legs.split_ratio
            when legs.activity_type in ('CREDIT', 'FEE') then abs(legs.cash_proceeds)
            when legs.activity_type = 'SELL'
                then cast(abs(legs.quantity) * legs.leg_unit_price as {{ decimal_type() }})
        end as amount,
        -- A buy-out's fee completes IBKR's cash exactly (the price is rounded up).
        case
            when legs.activity_type = 'SELL'
                then cast(abs(legs.quantity) * legs.leg_unit_price as {{ decimal_type() }})
                    - legs.cash_proceeds
            else cast(0 as {{ decimal_type() }})
        end as fee,
        legs.description,
        {{ leg_lineage }}
    from legs

),

unioned as (

    select * from share_legs
    union all
    select * from cash_legs

),

final as (

    select
        unioned.external_id,
        unioned.broker_account_id,
        'corporate_action' as source,
        coalesce(unioned.transaction_id, unioned.action_id) as source_id,
        unioned.source_row_key,
        unioned.source_group_id,
        unioned.activity_type,
        cast(null as varchar) as subtype,
        {{ activity_local_time('unioned.action_moment', 'unioned.action_at_has_time') }}
            as activity_at,
        cast(unioned.action_moment as date) as activity_date,
        unioned.action_at_zone as activity_at_zone,
        {{ activity_time_zone('unioned.action_at_zone') }} as activity_time_zone,
        unioned.symbol,
        unioned.exchange_mic,
        unioned.quote_currency,
        case when unioned.symbol is not null then 'EQUITY' end as instrument_type,
        unioned.quantity,
        unioned.unit_price,
        unioned.amount,
        unioned.fee,
        {{ to_major_currency('unioned.currency') }} as currency,
        unioned.description,
        unioned.resolved_action_type as flex_type,
        cast(null as varchar) as direction,
        unioned.asset_category,
        unioned.conid,
        unioned.isin,
        unioned.extract_id
    from unioned

)

select * from final
