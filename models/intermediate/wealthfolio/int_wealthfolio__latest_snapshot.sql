{#- The latest Wealthfolio snapshot of the configured account (at most one row). With
    no wf_account_id configured, the latest snapshot of any account. -#}
with

snapshots as (

    select * from {{ ref('stg_wealthfolio__snapshots') }}

),

final as (

    select *
    from snapshots
    where
        {{ sql_string(flexsync_wf_account_id()) }} = ''
        or snapshots.wf_account_id is null
        or snapshots.wf_account_id = {{ sql_string(flexsync_wf_account_id()) }}
    qualify row_number() over (
            order by snapshots.snapshot_at desc, snapshots.snapshot_id desc
        ) = 1

)

select * from final
