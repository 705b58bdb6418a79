{#- One row per deduplicated IBKR transaction tax (TransactionTaxes: UK stamp duty,
    French FTT ...) with its fate. The tax is counted once: when the trade it belongs to
    already carries it in `taxes` (and so in that trade's fee) it is 'in_trade_fee';
    otherwise it becomes a TAX activity of its own ('mapped'). -#}
with

transaction_taxes as (

    select * from {{ ref('stg_ibkr__transaction_taxes') }}

),

trades as (

    select * from {{ ref('int_ibkr__trades_classified') }}

),

trade_taxes as (

    select
        trades.broker_account_id,
        trades.trade_id,
        min(trades.external_id) as trade_external_id,
        sum(abs(coalesce(trades.taxes, 0))) as taxes_on_trade
    from trades
    where trades.trade_id is not null
    group by all

),

classified as (

    select
        transaction_taxes.*,
        trade_taxes.trade_external_id,
        coalesce(trade_taxes.taxes_on_trade, 0) <> 0 as is_in_trade_fee,
        case
            when transaction_taxes.tax_amount is null then 'unparseable amount'
            when transaction_taxes.tax_amount = 0 then 'zero amount'
            when transaction_taxes.currency is null then 'missing currency'
            when transaction_taxes.taxed_at is null and transaction_taxes.report_date is null
                then 'unparseable date'
            when {{ activity_time_zone('transaction_taxes.taxed_at_zone') }} is null
                then 'unknown time zone ' || transaction_taxes.taxed_at_zone
        end as unmapped_reason
    from transaction_taxes
    left join trade_taxes
        on
            transaction_taxes.broker_account_id = trade_taxes.broker_account_id
            and transaction_taxes.trade_id = trade_taxes.trade_id

),

final as (

    select
        classified.*,
        case
            when classified.unmapped_reason is not null then 'unmapped'
            when classified.is_in_trade_fee then 'in_trade_fee'
            else 'mapped'
        end as disposition,
        'transaction_tax:' || classified.transaction_tax_row_key as source_row_key,
        'ibkr:tax:' || regexp_replace(classified.transaction_tax_row_key, '^md5:', '')
            as external_id,
        coalesce(classified.taxed_at, cast(classified.report_date as timestamp))
            as taxed_moment
    from classified

)

select * from final
