{#- One row per Wealthfolio activity of each account's latest snapshot, typed, with the
    canonical symbol (Wealthfolio returns LSE assets as 'VOD' + MIC 'XLON': that is
    'VOD.L'). Every consumer wants Wealthfolio as it is now; older snapshots stay in
    raw_wealthfolio for analysts, and reading only the latest keeps the nightly work
    from growing with the history. -#}
with

snapshots as (

    select * from {{ source('wealthfolio', 'snapshots') }}

),

latest_snapshots as (

    select snapshots.snapshot_id
    from snapshots
    qualify row_number() over (
            partition by snapshots.wf_account_id
            order by snapshots.snapshot_at desc, snapshots.snapshot_id desc
        ) = 1

),

source as (

    select * from {{ source('wealthfolio', 'activities') }}
    where _snapshot_id in (select latest_snapshots.snapshot_id from latest_snapshots)

),

exchanges as (

    {{ select_exchanges() }}

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
        source._snapshot_id as snapshot_id,
        {{ flex_text('source.id') }} as wf_activity_id,
        {{ flex_text('source.account_id') }} as wf_account_id,
        {{ flex_text('source.asset_id') }} as asset_id,
        {{ flex_text('source.idempotency_key') }} as idempotency_key,
        {{ flex_text('source.source_record_id') }} as source_record_id,

        ---------- strings
        upper({{ flex_text('source.activity_type') }}) as activity_type,
        {{ flex_text('source.subtype') }} as subtype,
        upper({{ flex_text('source.status') }}) as status,
        {{ flex_text('source.asset_symbol') }} as asset_symbol,
        upper({{ flex_text('source.exchange_mic') }}) as exchange_mic,
        {{ flex_text('source.instrument_type') }} as instrument_type,
        {{ flex_text('source.currency') }} as currency,
        {{ flex_text('source.source_system') }} as source_system,
        {{ flex_text('source.comment') }} as comment,

        ---------- numerics
        {{ flex_decimal('source.quantity') }} as quantity,
        {{ flex_decimal('source.unit_price') }} as unit_price,
        {{ flex_decimal('source.amount') }} as amount,
        {{ flex_decimal('source.fee') }} as fee,

        ---------- timestamps (Wealthfolio returns UTC, RFC 3339 or YYYY-MM-DD)
        try_cast(
            left(replace(trim(source.activity_date), 'T', ' '), 19) as timestamp
        ) as activity_at,
        source._snapshot_at as snapshot_at

    from source

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

),

-- A page boundary that moved during the snapshot can repeat a row.
deduplicated as (

    select *
    from canonicalised
    qualify
        wf_activity_id is null
        or row_number() over (
            partition by snapshot_id, wf_activity_id order by activity_at
        ) = 1

)

select * from deduplicated
