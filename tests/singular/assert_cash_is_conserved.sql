{#- Conservation of cash, per (IBKR account, currency): the cash IBKR moved — trades'
    proceeds + taxes and their commission in its own currency, an FX conversion's base
    currency quantity, cash transactions' amounts, corporate actions' proceeds,
    transfers' cash, transaction taxes not already in a trade — equals the cash the
    mapped activities move by Wealthfolio's rules (macros/wealthfolio_cash.sql) plus the
    unmapped rows' amounts. Read straight from staging, not from the mapping models.
    Returns every (account, currency) that differs by more than 1e-6. -#}
with

trades as (

    select * from {{ ref('stg_ibkr__trades') }}

),

ibkr_cash as (

    select
        trades.broker_account_id,
        {{ to_major_currency('trades.currency') }} as currency,
        -- quantity x price only where it cannot overflow (as the mapping computes it).
        {{ to_major_amount(
            'coalesce(trades.proceeds, case when '
            ~ product_fits('trades.quantity', 'coalesce(trades.trade_price, 0)')
            ~ ' then -trades.quantity * trades.trade_price end, 0)'
            ~ ' + coalesce(trades.taxes, 0)', 'trades.currency'
        ) }} as amount
    from trades
    union all
    select
        trades.broker_account_id,
        {{ to_major_currency('coalesce(trades.commission_currency, trades.currency)') }}
            as currency,
        {{ to_major_amount(
            'coalesce(trades.ib_commission, 0)',
            'coalesce(trades.commission_currency, trades.currency)'
        ) }} as amount
    from trades
    union all
    select
        trades.broker_account_id,
        regexp_extract(trades.symbol, '^([A-Z]{3})\.[A-Z]{3}$', 1) as currency,
        trades.quantity as amount
    from trades
    where trades.asset_category = 'CASH' and regexp_matches(trades.symbol, '^[A-Z]{3}\.[A-Z]{3}$')
    union all
    select
        cash.broker_account_id,
        {{ to_major_currency('cash.currency') }},
        {{ to_major_amount('coalesce(cash.amount, 0)', 'cash.currency') }}
    from {{ ref('stg_ibkr__cash_transactions') }} as cash
    union all
    select
        actions.broker_account_id,
        {{ to_major_currency('actions.currency') }},
        {{ to_major_amount('coalesce(actions.proceeds, -actions.amount, 0)', 'actions.currency') }}
    from {{ ref('stg_ibkr__corporate_actions') }} as actions
    union all
    select
        transfers.broker_account_id,
        {{ to_major_currency('transfers.currency') }},
        {{ to_major_amount('transfers.signed_cash', 'transfers.currency') }}
    from {{ ref('int_ibkr__transfers_classified') }} as transfers
    union all
    select
        taxes.broker_account_id,
        {{ to_major_currency('taxes.currency') }},
        {{ to_major_amount('coalesce(taxes.tax_amount, 0)', 'taxes.currency') }}
    from {{ ref('int_ibkr__transaction_taxes_classified') }} as taxes
    where taxes.disposition <> 'in_trade_fee'

),

booked_cash as (

    select
        activities.broker_account_id,
        activities.currency,
        {{ wealthfolio_cash_effect(
            'activities.activity_type', 'activities.quantity', 'activities.unit_price',
            'activities.amount', 'activities.fee', 'activities.symbol is not null'
        ) }} as amount
    from {{ ref('fct_activities') }} as activities
    union all
    select
        unmapped.broker_account_id,
        unmapped.currency,
        coalesce(unmapped.amount, 0) as amount
    from {{ ref('unmapped_transactions') }} as unmapped

),

ibkr_totals as (

    select
        broker_account_id,
        currency,
        sum(amount) as ibkr_amount
    from ibkr_cash
    group by all

),

booked_totals as (

    select
        broker_account_id,
        currency,
        sum(amount) as booked_amount
    from booked_cash
    group by all

),

final as (

    select
        coalesce(ibkr_totals.broker_account_id, booked_totals.broker_account_id)
            as broker_account_id,
        coalesce(ibkr_totals.currency, booked_totals.currency) as currency,
        coalesce(ibkr_totals.ibkr_amount, 0) as ibkr_amount,
        coalesce(booked_totals.booked_amount, 0) as booked_amount
    from ibkr_totals
    full outer join booked_totals
        on
            ibkr_totals.broker_account_id = booked_totals.broker_account_id
            and ibkr_totals.currency is not distinct from booked_totals.currency

)

select * from final
where abs(ibkr_amount - booked_amount) > 0.000001
