{#- One row per attempt to post an external id to Wealthfolio (the ledger). -#}
with

source as (

    select * from {{ source('sync', 'posted_activities') }}

),

renamed as (

    select
        ---------- ids
        external_id,
        wf_activity_id,
        run_id,

        ---------- strings
        lower(status) as status,
        error,

        ---------- booleans
        lower(status) in ('posted', 'already_present') as is_in_wealthfolio,

        ---------- timestamps
        recorded_at

    from source

)

select * from renamed
