{#- One row per instrument position of each account's latest statement (SUMMARY level),
    restricted to what flexsync posts (STK incl. ETFs, ETF, FUND; rows without a
    category are kept so they show up as drift rather than vanish). -#}
with

open_positions as (

    select * from {{ ref('stg_ibkr__open_positions') }}

),

latest_statements as (

    select * from {{ ref('int_ibkr__latest_statements') }}

),

symbols as (

    select * from {{ ref('int_ibkr__symbols_canonicalised') }}

),

final as (

    select
        open_positions.broker_account_id,
        open_positions.conid,
        open_positions.isin,
        symbols.canonical_symbol as symbol,
        symbols.exchange_mic,
        open_positions.symbol as broker_symbol,
        open_positions.asset_category,
        open_positions.currency,
        open_positions.position_quantity,
        open_positions.mark_price,
        open_positions.report_date,
        latest_statements.to_date as statement_to_date,
        open_positions.extract_id,
        open_positions.statement_index
    from open_positions
    inner join latest_statements
        on
            open_positions.extract_id = latest_statements.extract_id
            and open_positions.statement_index = latest_statements.statement_index
    left join symbols
        on {{ instrument_join_condition('open_positions', 'symbols') }}
    where
        open_positions.asset_category is null
        or open_positions.asset_category in ('STK', 'ETF', 'FUND')

)

select * from final
