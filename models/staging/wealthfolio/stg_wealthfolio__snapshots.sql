{#- One row per Wealthfolio snapshot taken (also when it found no activity). -#}
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

        ---------- numerics
        total_row_count,
        row_count,

        ---------- timestamps
        snapshot_at

    from source

)

select * from renamed
