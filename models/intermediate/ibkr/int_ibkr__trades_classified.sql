{#- One row per deduplicated IBKR trade execution with its fate:
      mapped   -> becomes a Wealthfolio BUY/SELL (marts.fct_activities);
      unmapped -> skipped and listed with a reason (marts.unmapped_transactions);
      dropped  -> a cancellation pair that never reached Wealthfolio (SPEC §4: a cancel
                  and its unposted original both drop out).
    A cancellation whose original is already posted is listed for review instead. -#}
with

trades as (

    select * from {{ ref('stg_ibkr__trades') }}

),

symbols as (

    select * from {{ ref('int_ibkr__symbols_canonicalised') }}

),

ledger as (

    select * from {{ ref('stg_sync__posted_activities') }}

),

posted as (

    select distinct ledger.external_id
    from ledger
    where ledger.is_in_wealthfolio

),

cancellations as (

    select * from trades
    where trades.is_cancellation

),

originals as (

    select * from trades
    where not trades.is_cancellation

),

-- Without an origTransactionID a cancel names its original by tradeID; a rebook can
-- reuse that tradeID, so the earliest execution carrying it is the original.
first_original_by_trade_id as (

    select *
    from originals
    where originals.trade_id is not null
    qualify row_number() over (
            partition by originals.broker_account_id, originals.trade_id
            order by
                try_cast(originals.transaction_id as hugeint) nulls last,
                originals.traded_at,
                originals.row_index
        ) = 1

),

cancel_links as (

    select
        cancellations.broker_account_id,
        cancellations.trade_row_key as cancel_row_key,
        coalesce(
            by_transaction.trade_row_key, by_trade.trade_row_key
        ) as original_row_key,
        coalesce(
            by_transaction.trade_id, by_trade.trade_id, cancellations.orig_trade_id
        ) as original_trade_id
    from cancellations
    left join originals as by_transaction
        on
            cancellations.orig_transaction_id = by_transaction.transaction_id
            and cancellations.broker_account_id = by_transaction.broker_account_id
    left join first_original_by_trade_id as by_trade
        on
            cancellations.orig_transaction_id is null
            and cancellations.orig_trade_id = by_trade.trade_id
            and cancellations.broker_account_id = by_trade.broker_account_id

),

cancelled_originals as (

    select distinct
        cancel_links.broker_account_id,
        cancel_links.original_row_key
    from cancel_links
    where cancel_links.original_row_key is not null

),

with_cancellations as (

    select
        trades.*,
        cancel_links.original_trade_id as cancelled_trade_id,
        cancelled_originals.original_row_key is not null as is_cancelled,
        case
            when trades.is_cancellation and posted_original.external_id is not null
                then 'review'
            when trades.is_cancellation then 'dropped'
            when
                cancelled_originals.original_row_key is not null
                and posted_self.external_id is null
                then 'dropped'
            else 'candidate'
        end as cancellation_outcome
    from trades
    left join cancel_links
        on
            trades.broker_account_id = cancel_links.broker_account_id
            and trades.trade_row_key = cancel_links.cancel_row_key
    left join cancelled_originals
        on
            trades.broker_account_id = cancelled_originals.broker_account_id
            and trades.trade_row_key = cancelled_originals.original_row_key
    left join posted as posted_original
        on posted_original.external_id = 'ibkr:trade:' || cancel_links.original_trade_id
    left join posted as posted_self
        on posted_self.external_id = 'ibkr:trade:' || trades.trade_id

),

-- External ids must be unique: when several remaining executions carry one tradeID
-- (a rebook after a cancel of a posted trade), a live execution beats a cancelled one.
ranked as (

    select
        with_cancellations.*,
        case
            when
                with_cancellations.cancellation_outcome = 'candidate'
                and with_cancellations.trade_id is not null
                then row_number() over (
                        partition by
                            with_cancellations.cancellation_outcome = 'candidate',
                            with_cancellations.trade_id
                        order by
                            with_cancellations.is_cancelled asc,
                            try_cast(with_cancellations.transaction_id as hugeint) desc nulls last,
                            with_cancellations.extracted_at desc,
                            with_cancellations.row_index desc
                    )
        end as trade_id_rank
    from with_cancellations

),

with_symbols as (

    select
        ranked.*,
        symbols.canonical_symbol,
        symbols.exchange_mic,
        symbols.quote_currency,
        symbols.resolved_listing_exchange
    from ranked
    left join symbols
        on {{ instrument_join_condition('ranked', 'symbols') }}

),

classified as (

    select
        with_symbols.*,
        case
            when with_symbols.cancellation_outcome = 'review'
                then 'cancellation of an already posted trade: review in Wealthfolio'
            when with_symbols.cancellation_outcome = 'dropped' then null
            when with_symbols.asset_category is null then 'missing asset category'
            when with_symbols.asset_category not in ('STK', 'ETF', 'FUND')
                then 'unsupported asset category'
            when with_symbols.trade_id is null then 'no tradeID'
            when with_symbols.trade_id_rank > 1 and with_symbols.is_cancelled then null
            when with_symbols.trade_id_rank > 1
                then 'duplicate tradeID (another execution carries the same id)'
            when
                with_symbols.buy_sell is null
                or with_symbols.buy_sell not in ('BUY', 'SELL')
                then 'unknown buySell'
            when with_symbols.quantity is null or with_symbols.quantity = 0
                then 'zero or missing quantity'
            when with_symbols.trade_price is null then 'missing trade price'
            when with_symbols.trade_price < 0 then 'negative trade price'
            when not {{ product_fits('with_symbols.quantity', 'with_symbols.trade_price') }}
                then 'quantity or price out of range'
            when with_symbols.currency is null then 'missing currency'
            when with_symbols.traded_at is null then 'unparseable trade date'
            when with_symbols.canonical_symbol is null then 'no symbol'
            when
                coalesce(with_symbols.ib_commission, 0) <> 0
                and with_symbols.commission_currency is not null
                and {{ to_major_currency('with_symbols.commission_currency') }}
                <> {{ to_major_currency('with_symbols.currency') }}
                then 'commission currency differs from trade currency'
        end as unmapped_reason
    from with_symbols

),

final as (

    select
        classified.*,
        case
            when classified.unmapped_reason is not null then 'unmapped'
            when classified.cancellation_outcome = 'dropped' then 'dropped'
            when classified.trade_id_rank > 1 then 'dropped'
            else 'mapped'
        end as disposition,
        'ibkr:trade:' || classified.trade_id as external_id,
        classified.buy_sell as activity_type,
        abs(classified.quantity) as activity_quantity,
        {{ to_major_amount('classified.trade_price', 'classified.currency') }}
            as activity_unit_price,
        {{ to_major_amount(
            'case when ' ~ product_fits('classified.quantity', 'classified.trade_price')
            ~ ' then cast(abs(classified.quantity * classified.trade_price) as '
            ~ decimal_type() ~ ') end',
            'classified.currency'
        ) }} as activity_amount,
        {{ to_major_amount(
            'abs(coalesce(classified.ib_commission, 0))',
            'coalesce(classified.commission_currency, classified.currency)'
        ) }} as activity_fee,
        {{ to_major_currency('classified.currency') }} as activity_currency,
        {{ to_major_amount(
            'case when ' ~ product_fits('classified.quantity', 'classified.trade_price')
            ~ ' then cast(classified.quantity * classified.trade_price as '
            ~ decimal_type() ~ ') end',
            'classified.currency'
        ) }} as signed_trade_amount
    from classified

)

select * from final
