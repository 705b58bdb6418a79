{#- One row per activity of each account's current Wealthfolio state, typed, with the
    canonical symbol (Wealthfolio returns LSE assets as 'VOD' + MIC 'XLON': that is
    'VOD.L'). raw_wealthfolio.activities holds one row per activity version: appended
    when an activity first appears, changes, or disappears (a tombstone). The state of
    an account is rebuilt here: the rows of its latest full snapshot (kind 'full' or
    NULL: snapshots taken before kind existed held every activity), overridden by the
    latest version per activity id from the 'changes' snapshots after it, tombstoned ids
    dropped; rows without an id come from the latest snapshot only. The snapshot
    extractor (flexsync/extract/wealthfolio_snapshot.py) diffs against the same state. -#}
{#- A table, not a view: the holdings, the drift and their tests read the state several
    times, and re-planning the reconstruction each time ran out of dbt's DuckDB memory
    limit with 5 years of snapshots. The drift rebuild after posting rebuilds it. -#}
{{ config(materialized='table') }}

with

snapshots as (

    select * from {{ source('wealthfolio', 'snapshots') }}

),

activities as (

    select * from {{ source('wealthfolio', 'activities') }}

),

exchanges as (

    {{ select_exchanges() }}

),

-- Each account's snapshots, newest first (recency 1 = the latest).
ranked_snapshots as (

    select
        snapshots.snapshot_id,
        snapshots.wf_account_id,
        snapshots.snapshot_at,
        coalesce(snapshots.kind, 'full') as kind,
        row_number() over (
            partition by snapshots.wf_account_id
            order by snapshots.snapshot_at desc, snapshots.snapshot_id desc
        ) as recency
    from snapshots

),

latest_snapshots as (

    select
        ranked_snapshots.wf_account_id,
        ranked_snapshots.snapshot_id,
        ranked_snapshots.snapshot_at
    from ranked_snapshots
    where ranked_snapshots.recency = 1

),

latest_full_snapshots as (

    select
        ranked_snapshots.wf_account_id,
        min(ranked_snapshots.recency) as recency
    from ranked_snapshots
    where ranked_snapshots.kind = 'full'
    group by ranked_snapshots.wf_account_id

),

-- The snapshots an account's state is made of: its latest full snapshot and every
-- snapshot after it (all 'changes'); without a full snapshot, all of them.
state_snapshots as (

    select
        ranked_snapshots.snapshot_id,
        ranked_snapshots.recency,
        latest_snapshots.snapshot_id as state_snapshot_id,
        latest_snapshots.snapshot_at as state_snapshot_at
    from ranked_snapshots
    inner join latest_snapshots
        on ranked_snapshots.wf_account_id is not distinct from latest_snapshots.wf_account_id
    left join latest_full_snapshots
        on
            ranked_snapshots.wf_account_id
            is not distinct from latest_full_snapshots.wf_account_id
    where
        latest_full_snapshots.recency is null
        or ranked_snapshots.recency <= latest_full_snapshots.recency

),

versions as (

    select
        activities.*,
        state_snapshots.recency,
        state_snapshots.state_snapshot_id,
        state_snapshots.state_snapshot_at
    from activities
    inner join state_snapshots
        on activities._snapshot_id = state_snapshots.snapshot_id

),

-- The newest version of each activity id (a full snapshot that repeated a row across
-- pages holds two: the lowest md5(raw_json) wins, as in the extractor).
latest_versions as (

    select *
    from versions
    where versions.id is not null
    qualify row_number() over (
            partition by versions.state_snapshot_id, versions.id
            order by versions.recency, md5(versions.raw_json)
        ) = 1

),

current_state as (

    select *
    from latest_versions
    where not coalesce(latest_versions._deleted, false)

    union all

    select *
    from versions
    where versions.id is null and versions.recency = 1

),

-- One suffix per listing MIC (a seed test guarantees it).
suffix_by_mic as (

    select
        exchanges.mic,
        max(exchanges.yahoo_suffix) as yahoo_suffix
    from exchanges
    where exchanges.is_listing_exchange and exchanges.mic is not null
    group by exchanges.mic

),

renamed as (

    select
        ---------- ids
        current_state._snapshot_id as snapshot_id,
        current_state.state_snapshot_id,
        {{ flex_text('current_state.id') }} as wf_activity_id,
        {{ flex_text('current_state.account_id') }} as wf_account_id,
        {{ flex_text('current_state.asset_id') }} as asset_id,
        {{ flex_text('current_state.idempotency_key') }} as idempotency_key,
        {{ flex_text('current_state.source_record_id') }} as source_record_id,

        ---------- strings
        upper({{ flex_text('current_state.activity_type') }}) as activity_type,
        {{ flex_text('current_state.subtype') }} as subtype,
        upper({{ flex_text('current_state.status') }}) as status,
        {{ flex_text('current_state.asset_symbol') }} as asset_symbol,
        upper({{ flex_text('current_state.exchange_mic') }}) as exchange_mic,
        {{ flex_text('current_state.instrument_type') }} as instrument_type,
        {{ flex_text('current_state.currency') }} as currency,
        {{ flex_text('current_state.source_system') }} as source_system,
        {{ flex_text('current_state.comment') }} as comment,
        {# Only in the row's JSON: the cash rules book a foreign trade with an fxRate in
           the account currency (int_wealthfolio__cash_balances). #}
        {{ flex_text("json_extract_string(current_state.raw_json, '$.accountCurrency')") }}
            as account_currency,

        ---------- numerics
        {{ flex_decimal('current_state.quantity') }} as quantity,
        {{ flex_decimal('current_state.unit_price') }} as unit_price,
        {{ flex_decimal('current_state.amount') }} as amount,
        {{ flex_decimal('current_state.fee') }} as fee,
        {{ flex_decimal("json_extract_string(current_state.raw_json, '$.fxRate')") }}
            as fx_rate,

        ---------- timestamps (Wealthfolio returns UTC, RFC 3339 or YYYY-MM-DD)
        try_cast(
            left(replace(trim(current_state.activity_date), 'T', ' '), 19) as timestamp
        ) as activity_at,
        current_state._snapshot_at as snapshot_at,
        current_state.state_snapshot_at

    from current_state

),

canonicalised as (

    select
        renamed.*,
        {{ canonical_symbol(
            'renamed.asset_symbol',
            'suffix_by_mic.mic',
            'suffix_by_mic.yahoo_suffix',
            'renamed.currency'
        ) }} as symbol
    from renamed
    left join suffix_by_mic
        on renamed.exchange_mic = suffix_by_mic.mic

)

select * from canonicalised
