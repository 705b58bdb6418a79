{#- One row per instrument position per landed statement (SUMMARY level). History is
    kept: int_ibkr__open_positions_latest picks each account's latest statement.
    Incremental: a nightly build reads only the extracts landed since the last one
    (macros/incremental.sql). -#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['extract_id', 'row_index'],
        on_schema_change='fail'
    )
}}

with

source as (

    select * from {{ source('ibkr', 'open_positions') }}
    where {{ landed_since_last_build() }}

),

-- LOT rows split a SUMMARY row into tax lots: SUMMARY or no level only.
summaries as (

    select *
    from source
    where
        _row_tag = 'OpenPosition'
        and coalesce(nullif(trim("levelOfDetail"), ''), 'SUMMARY') = 'SUMMARY'

),

renamed as (

    select
        ---------- ids
        coalesce(
            {{ flex_text('_statement_account_id') }}, {{ flex_text('"accountId"') }}
        ) as broker_account_id,
        {{ flex_text('"conid"') }} as conid,
        {{ flex_text('"isin"') }} as isin,

        ---------- strings
        {{ flex_text('"assetCategory"') }} as asset_category,
        {{ flex_text('"subCategory"') }} as sub_category,
        {{ flex_text('"symbol"') }} as symbol,
        {{ flex_text('"description"') }} as description,
        {{ flex_text('"listingExchange"') }} as listing_exchange,
        {{ flex_text('"exchange"') }} as exchange,
        {{ flex_text('"currency"') }} as currency,
        {{ flex_text('"side"') }} as side,
        {{ flex_text('"levelOfDetail"') }} as level_of_detail,

        ---------- numerics
        {{ flex_decimal('"position"') }} as position_quantity,
        {{ flex_decimal('"markPrice"') }} as mark_price,
        {{ flex_decimal('"positionValue"') }} as position_value,
        {{ flex_decimal('"multiplier"') }} as multiplier,

        ---------- dates
        {{ flex_date('"reportDate"') }} as report_date,

        ---------- lineage
        _extract_id as extract_id,
        _file_sha256 as file_sha256,
        _statement_index as statement_index,
        _row_index as row_index,
        _extracted_at as extracted_at

    from summaries

)

select * from renamed
