{#- One row per conid whose listing exchange another Flex section names: SecuritiesInfo
    first, else OpenPositions; only codes the exchanges seed knows as listings count. -#}
with

securities_info as (

    select * from {{ ref('stg_ibkr__securities_info') }}

),

open_positions as (

    select * from {{ ref('stg_ibkr__open_positions') }}

),

exchanges as (

    {{ select_exchanges() }}

),

candidates as (

    select
        securities_info.conid,
        securities_info.listing_exchange,
        'SecuritiesInfo' as listing_source,
        1 as source_rank,
        securities_info.extracted_at
    from securities_info

    union all

    select
        open_positions.conid,
        open_positions.listing_exchange,
        'OpenPositions' as listing_source,
        2 as source_rank,
        open_positions.extracted_at
    from open_positions

),

listings as (

    select candidates.*
    from candidates
    inner join exchanges
        on candidates.listing_exchange = exchanges.ibkr_code
    where candidates.conid is not null and exchanges.is_listing_exchange

),

final as (

    select
        listings.conid,
        listings.listing_exchange,
        listings.listing_source
    from listings
    qualify row_number() over (
            partition by listings.conid
            order by listings.source_rank asc, listings.extracted_at desc
        ) = 1

)

select * from final
