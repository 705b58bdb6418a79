{#- The latest Wealthfolio snapshot of each configured account (IBKR_ACCOUNT_ID, or each
    account of IBKR_ACCOUNT_MAP): one row per account. With no account configured, the
    latest snapshot of any account (one row). -#}
with

snapshots as (

    select * from {{ ref('stg_wealthfolio__snapshots') }}

),

final as (

    select *
    from snapshots
    where
        snapshots.wf_account_id is null
        or {{ is_configured_wf_account('snapshots.wf_account_id') }}
    qualify row_number() over (
            partition by {{ wf_account_key('snapshots.wf_account_id') }}
            order by snapshots.snapshot_at desc, snapshots.snapshot_id desc
        ) = 1

)

select * from final
