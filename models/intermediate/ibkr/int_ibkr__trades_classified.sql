{#- One row per deduplicated IBKR trade execution with its fate:
      mapped   -> becomes a Wealthfolio BUY/SELL (marts.fct_activities);
      unmapped -> skipped and listed with a reason (marts.unmapped_transactions): also a
                  cancellation pair that never reached Wealthfolio (a cancel and its
                  unposted original both drop out, docs/mapping.md#cancellations; their
                  cash nets to zero), and a
                  cancel of an already posted trade (for review).
    Stock, ETF and fund trades become BUY/SELL (int_ibkr__trade_activities); FX
    conversions (assetCategory CASH) become a pair of cash transfers. -#}
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

-- FX conversions (assetCategory CASH) read their pair from the symbol: GBP.USD buys or
-- sells GBP (quantity, signed) against USD (the trade currency, proceeds).
with_fx_pair as (

    select
        with_symbols.*,
        with_symbols.asset_category = 'CASH' as is_fx_conversion,
        case
            when with_symbols.asset_category = 'CASH'
                then nullif(regexp_extract(with_symbols.symbol, '^([A-Z]{3})\.[A-Z]{3}$', 1), '')
        end as fx_base_currency
    from with_symbols

),

classified as (

    select
        with_fx_pair.*,
        case
            when with_fx_pair.cancellation_outcome = 'review'
                then 'cancellation of an already posted trade: review in Wealthfolio'
            when with_fx_pair.cancellation_outcome = 'dropped'
                then 'cancelled trade: the cancel and its unposted original are both skipped'
            when with_fx_pair.asset_category is null then 'missing asset category'
            when with_fx_pair.asset_category not in ('STK', 'ETF', 'FUND', 'CASH')
                then 'unsupported asset category ' || with_fx_pair.asset_category
            when with_fx_pair.trade_id is null then 'no tradeID'
            when with_fx_pair.trade_id_rank > 1 and with_fx_pair.is_cancelled
                then 'superseded by a rebooked execution with the same tradeID'
            when with_fx_pair.trade_id_rank > 1
                then 'duplicate tradeID (another execution carries the same id)'
            when
                with_fx_pair.buy_sell is null
                or with_fx_pair.buy_sell not in ('BUY', 'SELL')
                then 'unknown buySell'
            when with_fx_pair.quantity is null or with_fx_pair.quantity = 0
                then 'zero or missing quantity'
            when with_fx_pair.currency is null then 'missing currency'
            when with_fx_pair.traded_at is null then 'unparseable trade date'
            when with_fx_pair.proceeds is null and with_fx_pair.trade_price is null
                then 'neither proceeds nor a trade price'
            when with_fx_pair.trade_price < 0 then 'negative trade price'
            when
                not {{ product_fits(
                    'with_fx_pair.quantity', 'coalesce(with_fx_pair.trade_price, 0)'
                ) }}
                or abs(coalesce(with_fx_pair.proceeds, 0)) >= 1000000000
                then 'quantity or price out of range'
            when with_fx_pair.is_fx_conversion and with_fx_pair.fx_base_currency is null
                then 'FX conversion whose symbol is not a currency pair (e.g. GBP.USD)'
            when
                with_fx_pair.is_fx_conversion
                and with_fx_pair.fx_base_currency = {{ to_major_currency('with_fx_pair.currency') }}
                then 'FX conversion between one currency'
            when not with_fx_pair.is_fx_conversion and with_fx_pair.canonical_symbol is null
                then 'no symbol'
        end as unmapped_reason
    from with_fx_pair

),

-- IBKR's cash effect of the trade, in major units: proceeds (signed: negative for a
-- purchase) + taxes (stamp duty, FTT; negative) + the commission when it is charged in
-- the trade currency (IBKR's netCash). A commission in another currency is its own leg.
with_trade_cash as (

    select
        classified.*,
        coalesce(classified.commission_currency, classified.currency) as fee_currency_raw,
        -- Null-safe: a row without a currency still has its commission counted once.
        coalesce({{ to_major_currency(
            'coalesce(classified.commission_currency, classified.currency)'
        ) }}, '') = coalesce({{ to_major_currency('classified.currency') }}, '')
            as is_commission_in_trade_currency,
        {{ to_major_amount(
            'coalesce(classified.proceeds, case when '
            ~ product_fits('classified.quantity', 'coalesce(classified.trade_price, 0)')
            ~ ' then cast(-classified.quantity * classified.trade_price as '
            ~ decimal_type() ~ ') end)',
            'classified.currency'
        ) }} as trade_proceeds,
        {{ to_major_amount('coalesce(classified.taxes, 0)', 'classified.currency') }}
            as trade_taxes,
        {{ to_major_amount(
            'coalesce(classified.ib_commission, 0)',
            'coalesce(classified.commission_currency, classified.currency)'
        ) }} as commission_amount
    from classified

),

with_net_cash as (

    select
        with_trade_cash.*,
        coalesce(with_trade_cash.trade_proceeds, 0)
        + with_trade_cash.trade_taxes
        + case
            when with_trade_cash.is_commission_in_trade_currency
                then with_trade_cash.commission_amount
            else 0
        end as trade_net_cash,
        -- Unit price: the trade price when IBKR's proceeds are quantity x price, else
        -- proceeds / quantity (funds priced per unit with rounding), rounded so the
        -- fee that completes netCash is never negative (down for a BUY, up for a SELL).
        case
            when
                with_trade_cash.trade_price is not null
                and {{ product_fits('with_trade_cash.quantity', 'with_trade_cash.trade_price') }}
                and abs(with_trade_cash.trade_proceeds) = abs(
                    {{ to_major_amount(
                        'cast(with_trade_cash.quantity * with_trade_cash.trade_price as '
                        ~ decimal_type() ~ ')',
                        'with_trade_cash.currency'
                    ) }}
                )
                then {{ to_major_amount(
                    'with_trade_cash.trade_price', 'with_trade_cash.currency'
                ) }}
            when with_trade_cash.buy_sell = 'SELL'
                then {{ decimal_ratio(
                    'with_trade_cash.trade_proceeds', 'with_trade_cash.quantity', 'ceil'
                ) }}
            else {{ decimal_ratio(
                'with_trade_cash.trade_proceeds', 'with_trade_cash.quantity', 'floor'
            ) }}
        end as priced_unit_price
    from with_trade_cash

),

priced as (

    select
        with_net_cash.*,
        cast(
            abs(with_net_cash.quantity) * with_net_cash.priced_unit_price
            as {{ decimal_type() }}
        ) as priced_amount
    from with_net_cash

),

-- The fee completes IBKR's netCash exactly: Wealthfolio books a BUY as
-- -(quantity x price + fee) and a SELL as quantity x price - fee.
with_fee as (

    select
        priced.*,
        case
            when priced.buy_sell = 'SELL' then priced.priced_amount - priced.trade_net_cash
            else -priced.trade_net_cash - priced.priced_amount
        end as completing_fee
    from priced

),

final as (

    select
        with_fee.* exclude (unmapped_reason),
        -- A BUY whose cash comes in (or a SELL whose cash goes out) fits no Wealthfolio
        -- trade: its fee would be negative. Listed, never posted with a made-up fee.
        coalesce(
            with_fee.unmapped_reason,
            case
                when not with_fee.is_fx_conversion and with_fee.completing_fee < 0
                    then 'IBKR''s cash for this ' || with_fee.buy_sell
                        || ' does not fit a trade (the fee would be negative): review'
            end
        ) as unmapped_reason,
        case
            when
                with_fee.unmapped_reason is not null
                or not with_fee.is_fx_conversion and with_fee.completing_fee < 0
                then 'unmapped'
            else 'mapped'
        end as disposition,
        'ibkr:trade:' || with_fee.trade_id as external_id,
        with_fee.buy_sell as activity_type,
        abs(with_fee.quantity) as activity_quantity,
        with_fee.priced_unit_price as activity_unit_price,
        with_fee.priced_amount as activity_amount,
        with_fee.completing_fee as activity_fee,
        {{ to_major_currency('with_fee.currency') }} as activity_currency,
        {{ to_major_currency('with_fee.fee_currency_raw') }} as commission_currency_major
    from with_fee

)

select * from final
