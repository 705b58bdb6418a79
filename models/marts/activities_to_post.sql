{#- One row per activity not yet in Wealthfolio: fct_activities minus the external ids
    the ledger records as posted / already present, minus the ids whose idempotencyKey
    Wealthfolio holds as of its latest snapshot. Failed posts stay here for the next run.
    Post in (activity_at, external_id) order so a BUY precedes its SELL. -#}
with

activities as (

    select * from {{ ref('fct_activities') }}

),

ledger as (

    select * from {{ ref('stg_sync__posted_activities') }}

),

wealthfolio_activities as (

    select * from {{ ref('stg_wealthfolio__activities') }}

),

latest_snapshot as (

    select * from {{ ref('int_wealthfolio__latest_snapshot') }}

),

posted as (

    select distinct ledger.external_id
    from ledger
    where ledger.is_in_wealthfolio

),

present_in_wealthfolio as (

    select distinct wealthfolio_activities.idempotency_key
    from wealthfolio_activities
    inner join latest_snapshot
        on wealthfolio_activities.state_snapshot_id = latest_snapshot.snapshot_id
    where wealthfolio_activities.idempotency_key is not null

),

final as (

    select activities.*
    from activities
    left join posted
        on activities.external_id = posted.external_id
    left join present_in_wealthfolio
        on activities.external_id = present_in_wealthfolio.idempotency_key
    where
        posted.external_id is null
        and present_in_wealthfolio.idempotency_key is null

)

select * from final
