{#- One row per Wealthfolio snapshot taken (also when it found no activity or nothing
    changed). Snapshots taken before `kind` existed (NULL) appended every activity:
    'full', and their row_count is their activity count. -#}
with

source as (

    select * from {{ source('wealthfolio', 'snapshots') }}

),

renamed as (

    select
        ---------- ids
        snapshot_id,
        {{ flex_text('wf_account_id') }} as wf_account_id,
        run_id,

        ---------- strings
        coalesce(kind, 'full') as kind,

        ---------- numerics
        total_row_count,
        row_count,
        coalesce(activity_count, case when kind is null then row_count end)
            as activity_count,

        ---------- dates
        date_from,

        ---------- timestamps
        snapshot_at

    from source

)

select * from renamed
