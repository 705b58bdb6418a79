{#- One row per instrument (conid), from the latest extract that described it.
    Incremental: a nightly build reads only the extracts landed since the last one
    (macros/incremental.sql). -#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='conid',
        on_schema_change='fail'
    )
}}

with

source as (

    select * from {{ source('ibkr', 'securities_info') }}
    where {{ landed_since_last_build() }}

),

renamed as (

    select
        ---------- ids
        {{ flex_text('"conid"') }} as conid,
        {{ flex_text('"isin"') }} as isin,

        ---------- strings
        {{ flex_text('"assetCategory"') }} as asset_category,
        {{ flex_text('"subCategory"') }} as sub_category,
        {{ flex_text('"symbol"') }} as symbol,
        {{ flex_text('"description"') }} as description,
        {{ flex_text('"listingExchange"') }} as listing_exchange,
        {{ flex_text('"currency"') }} as currency,
        {{ flex_text('"type"') }} as security_type,

        ---------- numerics
        {{ flex_decimal('"multiplier"') }} as multiplier,

        ---------- lineage
        _extract_id as extract_id,
        _statement_index as statement_index,
        _row_index as row_index,
        _extracted_at as extracted_at

    from source
    where _row_tag = 'SecurityInfo'

),

deduplicated as (

    select *
    from renamed
    where conid is not null
    qualify row_number() over (
            partition by conid
            order by extracted_at desc, extract_id desc, statement_index desc, row_index desc
        ) = 1

)

select * from deduplicated
