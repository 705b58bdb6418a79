{#- One row per mapped external id, ever: every IBKR trade and cash movement that
    becomes a Wealthfolio activity. Amounts are positive (the type carries the sign),
    money in major units (GBX -> GBP), quantities and money DECIMAL. -#}
with

trades as (

    select * from {{ ref('int_ibkr__trades_classified') }}

),

cash_transactions as (

    select * from {{ ref('int_ibkr__cash_transactions_classified') }}

),

trade_activities as (

    select
        trades.external_id,
        trades.broker_account_id,
        'trade' as source,
        trades.trade_id as source_id,
        trades.activity_type,
        cast(null as varchar) as subtype,
        trades.traded_at as activity_at,
        coalesce(trades.trade_date, cast(trades.traded_at as date)) as activity_date,
        trades.canonical_symbol as symbol,
        trades.exchange_mic,
        trades.quote_currency,
        {{ wealthfolio_instrument_type('trades.asset_category') }} as instrument_type,
        trades.activity_quantity as quantity,
        trades.activity_unit_price as unit_price,
        trades.activity_amount as amount,
        trades.activity_fee as fee,
        trades.activity_currency as currency,
        trades.description,
        trades.buy_sell as flex_type,
        cast(null as varchar) as direction,
        trades.asset_category,
        trades.conid,
        trades.isin,
        trades.traded_at_zone as activity_at_zone,
        trades.extract_id
    from trades
    where trades.disposition = 'mapped'

),

cash_activities as (

    select
        cash_transactions.external_id,
        cash_transactions.broker_account_id,
        'cash' as source,
        cash_transactions.transaction_id as source_id,
        cash_transactions.activity_type,
        cash_transactions.activity_subtype as subtype,
        cash_transactions.transacted_at as activity_at,
        cast(cash_transactions.transacted_at as date) as activity_date,
        cash_transactions.activity_symbol as symbol,
        case
            when cash_transactions.activity_symbol is not null
                then cash_transactions.exchange_mic
        end as exchange_mic,
        case
            when cash_transactions.activity_symbol is not null
                then cash_transactions.quote_currency
        end as quote_currency,
        case
            when cash_transactions.activity_symbol is not null then 'EQUITY'
        end as instrument_type,
        cast(null as {{ decimal_type() }}) as quantity,
        cast(null as {{ decimal_type() }}) as unit_price,
        cash_transactions.activity_amount as amount,
        cast(0 as {{ decimal_type() }}) as fee,
        cash_transactions.activity_currency as currency,
        cash_transactions.description,
        cash_transactions.flex_type,
        cash_transactions.direction,
        cash_transactions.asset_category,
        cash_transactions.conid,
        cash_transactions.isin,
        cash_transactions.transacted_at_zone as activity_at_zone,
        cash_transactions.extract_id
    from cash_transactions
    where cash_transactions.disposition = 'mapped'

),

unioned as (

    select * from trade_activities
    union all
    select * from cash_activities

),

final as (

    select
        ---------- ids
        unioned.external_id,
        {{ wf_account_id_for('unioned.broker_account_id') }} as wf_account_id,
        unioned.broker_account_id,
        unioned.source,
        unioned.source_id,

        ---------- strings
        unioned.activity_type,
        unioned.subtype,
        unioned.symbol,
        {{ bare_ticker('unioned.symbol', 'unioned.exchange_mic') }} as ticker,
        unioned.exchange_mic,
        unioned.quote_currency,
        unioned.instrument_type,
        unioned.currency,
        unioned.description,
        unioned.flex_type,
        unioned.direction,
        unioned.asset_category,
        unioned.conid,
        unioned.isin,

        ---------- numerics
        cast(unioned.quantity as {{ decimal_type() }}) as quantity,
        cast(unioned.unit_price as {{ decimal_type() }}) as unit_price,
        cast(unioned.amount as {{ decimal_type() }}) as amount,
        cast(unioned.fee as {{ decimal_type() }}) as fee,

        ---------- dates and timestamps (local time as IBKR wrote it; zone if given)
        unioned.activity_date,
        unioned.activity_at,
        unioned.activity_at_zone,

        ---------- lineage
        unioned.extract_id
    from unioned

)

select * from final
