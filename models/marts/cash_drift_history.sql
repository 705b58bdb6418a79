{#- One row per run x Wealthfolio account x currency: cash_drift as each run saw it.
    Rebuilding the drift twice in one run (after posting, README.md#how-it-works)
    replaces that run's rows: the whole run is the key (pre-hook delete, then
    delete+insert), so a row gone from the second build leaves no stale row, even when
    the second build has no drift rows at all. No max()-from-this filter, so an empty
    `this` cannot starve the insert.
    The history exists nowhere else: full_refresh=false keeps --full-refresh from
    dropping it. -#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='run_id',
        on_schema_change='append_new_columns',
        full_refresh=false,
        pre_hook=(
            "{% if is_incremental() %}delete from {{ this }} where run_id = "
            "{{ sql_string(flexsync_run_id()) }}{% endif %}"
        )
    )
}}

with

drift as (

    select * from {{ ref('cash_drift') }}

),

final as (

    select
        {{ sql_string(flexsync_run_id()) }} as run_id,
        cast({{ sql_string(flexsync_run_at()) }} as timestamp) as run_at,
        drift.broker_account_id,
        drift.wf_account_id,
        drift.currency,
        drift.broker_cash,
        drift.wf_cash,
        drift.drift,
        drift.as_of,
        drift.wf_snapshot_at
    from drift

)

select * from final
