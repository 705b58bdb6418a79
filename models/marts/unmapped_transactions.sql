{#- One row per skipped IBKR source row, with the reason it was not mapped: unsupported
    asset categories, cash (type, direction) pairs without a seed row (reversals,
    871(m) Withholding, Broker Fees ...), zero amounts, rows without an id, and
    cancellations of already posted trades (for review). Logged at WARNING each run. -#}
with

trades as (

    select * from {{ ref('int_ibkr__trades_classified') }}

),

cash_transactions as (

    select * from {{ ref('int_ibkr__cash_transactions_classified') }}

),

unmapped_trades as (

    select
        'trade' as source,
        trades.trade_id as source_id,
        trades.trade_row_key as source_row_key,
        trades.broker_account_id,
        trades.buy_sell as flex_type,
        trades.transaction_type,
        trades.asset_category,
        coalesce(trades.canonical_symbol, trades.symbol) as symbol,
        trades.signed_trade_amount as amount,
        trades.activity_currency as currency,
        coalesce(trades.trade_date, cast(trades.traded_at as date)) as activity_date,
        trades.description,
        trades.unmapped_reason as reason,
        case
            when trades.cancellation_outcome = 'review'
                then 'ibkr:trade:' || trades.cancelled_trade_id
        end as related_external_id,
        trades.extract_id
    from trades
    where trades.disposition = 'unmapped'

),

unmapped_cash as (

    select
        'cash' as source,
        cash_transactions.transaction_id as source_id,
        cash_transactions.cash_row_key as source_row_key,
        cash_transactions.broker_account_id,
        cash_transactions.flex_type,
        cast(null as varchar) as transaction_type,
        cash_transactions.asset_category,
        coalesce(cash_transactions.canonical_symbol, cash_transactions.symbol) as symbol,
        cash_transactions.signed_amount as amount,
        cash_transactions.activity_currency as currency,
        cast(cash_transactions.transacted_at as date) as activity_date,
        cash_transactions.description,
        cash_transactions.unmapped_reason as reason,
        cast(null as varchar) as related_external_id,
        cash_transactions.extract_id
    from cash_transactions
    where cash_transactions.disposition = 'unmapped'

),

final as (

    select * from unmapped_trades
    union all
    select * from unmapped_cash

)

select * from final
