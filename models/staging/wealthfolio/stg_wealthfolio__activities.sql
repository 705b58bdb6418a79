{#- One row per activity of each account's current Wealthfolio state, typed, with the
    canonical symbol (Wealthfolio returns LSE assets as 'VOD' + MIC 'XLON': that is
    'VOD.L'). raw_wealthfolio.activities holds one row per activity version (appended
    when an activity first appears, changes, or disappears: a tombstone); which versions
    make an account's current state is decided in one place, the warehouse view
    raw_wealthfolio.activity_state_versions (flexsync/core/warehouse.py), which the
    snapshot extractor diffs against too. -#}
{#- A table, not a view: the holdings, the drift and their tests read the state several
    times, and re-planning the reconstruction each time ran out of dbt's DuckDB memory
    limit with 5 years of snapshots. The drift rebuild after posting rebuilds it. -#}
{{ config(materialized='table') }}

with

versions as (

    select * from {{ source('wealthfolio', 'activity_state_versions') }}

),

exchanges as (

    {{ select_exchanges() }}

),

-- The current version of each activity; a current tombstone means it is gone.
current_state as (

    select *
    from versions
    where versions.is_current and not coalesce(versions._deleted, false)

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
        {# Copied out of the row's JSON when it landed (raw_json is never read here):
           the cash rules book a foreign trade with an fxRate in the account currency
           (int_wealthfolio__cash_balances). #}
        {{ flex_text('current_state.account_currency') }} as account_currency,

        ---------- numerics
        {{ flex_decimal('current_state.quantity') }} as quantity,
        {{ flex_decimal('current_state.unit_price') }} as unit_price,
        {{ flex_decimal('current_state.amount') }} as amount,
        {{ flex_decimal('current_state.fee') }} as fee,
        {{ flex_decimal('current_state.fx_rate') }} as fx_rate,

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
