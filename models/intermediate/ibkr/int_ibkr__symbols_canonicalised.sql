{#- One row per distinct (symbol, conid, listingExchange, exchange, currency) seen in
    trades, cash transactions and open positions, with the canonical Wealthfolio
    symbol, MIC and quote currency (docs/mapping.md#symbols; macros/canonical_symbol.sql).
    The quote currency follows the instrument's own currency (SecuritiesInfo, else
    OpenPositions, else its trades), not a dividend's payment currency.
    Listing exchange, in order: the row's listingExchange, the SecuritiesInfo /
    OpenPositions listing of the same conid, the row's exchange when it is a listing.
    IBKR's own symbol shapes (BMWd, BRK B, UUU.TEN2 ...) are first rewritten by the
    first matching seeds/symbol_rules.csv row. A seeds/symbol_overrides.csv row for the
    conid wins over both. -#}
with

trades as (

    select * from {{ ref('stg_ibkr__trades') }}

),

cash_transactions as (

    select * from {{ ref('stg_ibkr__cash_transactions') }}

),

open_positions as (

    select * from {{ ref('stg_ibkr__open_positions') }}

),

securities_info as (

    select * from {{ ref('stg_ibkr__securities_info') }}

),

corporate_actions as (

    select * from {{ ref('stg_ibkr__corporate_actions') }}

),

transfers as (

    select * from {{ ref('stg_ibkr__transfers') }}

),

conid_listings as (

    select * from {{ ref('int_ibkr__conid_listing_exchanges') }}

),

exchanges as (

    {{ select_exchanges() }}

),

symbol_overrides as (

    select * from {{ ref('symbol_overrides') }}

),

symbol_rules as (

    select
        symbol_rules_seed.rule_order,
        symbol_rules_seed.shape,
        symbol_rules_seed.pattern,
        symbol_rules_seed.replacement,
        string_split(nullif(symbol_rules_seed.listing_mics, ''), ' ') as listing_mics,
        string_split(nullif(symbol_rules_seed.currencies, ''), ' ') as currencies
    from {{ ref('symbol_rules') }} as symbol_rules_seed

),

-- The currency an instrument (conid) trades in. A dividend can be paid in another
-- currency (VWRL on the LSE pays USD): the quote currency follows the instrument.
instrument_currencies as (

    select
        currencies.conid,
        currencies.currency
    from (
        select
            securities_info.conid,
            securities_info.currency,
            1 as source_rank,
            securities_info.extracted_at
        from securities_info
        union all
        select
            open_positions.conid,
            open_positions.currency,
            2 as source_rank,
            open_positions.extracted_at
        from open_positions
        union all
        select
            trades.conid,
            trades.currency,
            3 as source_rank,
            trades.extracted_at
        from trades
    ) as currencies
    where currencies.conid is not null and currencies.currency is not null
    qualify row_number() over (
            partition by currencies.conid
            order by currencies.source_rank asc, currencies.extracted_at desc
        ) = 1

),

instruments as (

    select
        trades.symbol,
        trades.conid,
        trades.listing_exchange,
        trades.exchange,
        trades.currency
    from trades

    union

    select
        cash_transactions.symbol,
        cash_transactions.conid,
        cash_transactions.listing_exchange,
        cast(null as varchar) as exchange,
        cash_transactions.currency
    from cash_transactions

    union

    select
        open_positions.symbol,
        open_positions.conid,
        open_positions.listing_exchange,
        open_positions.exchange,
        open_positions.currency
    from open_positions

    union

    select
        corporate_actions.symbol,
        corporate_actions.conid,
        corporate_actions.listing_exchange,
        cast(null as varchar) as exchange,
        corporate_actions.currency
    from corporate_actions

    union

    select
        transfers.symbol,
        transfers.conid,
        transfers.listing_exchange,
        cast(null as varchar) as exchange,
        transfers.currency
    from transfers

),

resolved as (

    select
        instruments.*,
        coalesce(
            by_listing_exchange.ibkr_code,
            by_conid.ibkr_code,
            by_exchange.ibkr_code
        ) as resolved_listing_exchange,
        case
            when by_listing_exchange.ibkr_code is not null then 'listingExchange'
            when by_conid.ibkr_code is not null then conid_listings.listing_source
            when by_exchange.ibkr_code is not null then 'exchange'
        end as listing_source
    from instruments
    left join exchanges as by_listing_exchange
        on
            instruments.listing_exchange = by_listing_exchange.ibkr_code
            and by_listing_exchange.is_listing_exchange
    left join conid_listings
        on instruments.conid = conid_listings.conid
    left join exchanges as by_conid
        on
            conid_listings.listing_exchange = by_conid.ibkr_code
            and by_conid.is_listing_exchange
    left join exchanges as by_exchange
        on
            instruments.exchange = by_exchange.ibkr_code
            and by_exchange.is_listing_exchange

),

-- IBKR's symbol shapes rewritten by the first matching rule (rule_order); the raw
-- symbol stays in `symbol` so rows still join back on it.
normalised as (

    select
        resolved.*,
        symbol_rules.shape as symbol_rule,
        coalesce(
            regexp_replace(resolved.symbol, symbol_rules.pattern, symbol_rules.replacement),
            resolved.symbol
        ) as normalised_symbol
    from resolved
    left join exchanges as rule_listing
        on resolved.resolved_listing_exchange = rule_listing.ibkr_code
    left join symbol_rules
        on
            regexp_full_match(resolved.symbol, symbol_rules.pattern)
            and (
                symbol_rules.listing_mics is null
                or list_contains(symbol_rules.listing_mics, rule_listing.mic)
            )
            and (
                symbol_rules.currencies is null
                or list_contains(symbol_rules.currencies, resolved.currency)
            )
    qualify row_number() over (
            partition by
                resolved.symbol,
                resolved.conid,
                resolved.listing_exchange,
                resolved.exchange,
                resolved.currency
            order by symbol_rules.rule_order asc nulls last
        ) = 1

),

canonicalised as (

    select
        normalised.*,
        listing.mic as listing_mic,
        listing.yahoo_suffix as listing_suffix,
        listing.quote_currency as listing_quote_currency,
        nullif(symbol_overrides.exchange_mic, '') as override_mic,
        nullif(symbol_overrides.canonical_symbol, '') is not null as is_overridden,
        coalesce(
            nullif(symbol_overrides.canonical_symbol, ''),
            {{ canonical_symbol(
                'normalised.normalised_symbol',
                'listing.ibkr_code',
                'listing.yahoo_suffix',
                'normalised.currency'
            ) }}
        ) as canonical_symbol
    from normalised
    left join exchanges as listing
        on normalised.resolved_listing_exchange = listing.ibkr_code
    left join symbol_overrides
        on normalised.conid = symbol_overrides.conid

),

-- One MIC per Yahoo suffix (a seed test guarantees it).
mic_by_suffix as (

    select
        exchanges.yahoo_suffix,
        max(exchanges.mic) as mic
    from exchanges
    where exchanges.is_listing_exchange and exchanges.yahoo_suffix is not null
    group by exchanges.yahoo_suffix

),

final as (

    select
        canonicalised.symbol,
        canonicalised.conid,
        canonicalised.listing_exchange,
        canonicalised.exchange,
        canonicalised.currency,
        canonicalised.resolved_listing_exchange,
        case
            when canonicalised.is_overridden then 'symbol_overrides'
            else canonicalised.listing_source
        end as listing_source,
        case
            when not canonicalised.is_overridden then canonicalised.symbol_rule
        end as symbol_rule,
        canonicalised.canonical_symbol,
        coalesce(
            canonicalised.override_mic, mic_by_suffix.mic, canonicalised.listing_mic
        ) as exchange_mic,
        {{ wealthfolio_quote_currency(
            'coalesce(instrument_currencies.currency, canonicalised.currency)',
            'canonicalised.listing_quote_currency'
        ) }} as quote_currency
    from canonicalised
    left join mic_by_suffix
        on {{ symbol_suffix('canonicalised.canonical_symbol') }} = mic_by_suffix.yahoo_suffix
    left join instrument_currencies
        on canonicalised.conid = instrument_currencies.conid

)

select * from final
