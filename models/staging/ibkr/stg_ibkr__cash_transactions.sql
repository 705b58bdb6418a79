{#- One row per IBKR cash movement (DETAIL level), latest extract wins. Incremental: a
    nightly build reads only the extracts landed since the last one
    (macros/incremental.sql). -#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['broker_account_id', 'cash_row_key'],
        on_schema_change='fail'
    )
}}

{#- The row's own identity: its id, else a digest of what it says. -#}
{% set cash_base_key -%}
coalesce(
    'tx:' || {{ flex_id('"transactionID"') }},
    'md5:' || md5(concat_ws(
        '|', _statement_account_id, type, symbol, conid, currency,
        amount, "dateTime", "reportDate", description
    ))
)
{%- endset %}

with

source as (

    select * from {{ source('ibkr', 'cash_transactions') }}
    where {{ landed_since_last_build() }}

),

-- SUMMARY rows repeat the DETAIL rows (without a transactionID): DETAIL or no level only.
details as (

    select *
    from source
    where
        _row_tag = 'CashTransaction'
        and coalesce(nullif(trim("levelOfDetail"), ''), 'DETAIL') = 'DETAIL'

),

renamed as (

    select
        ---------- ids
        coalesce(
            {{ flex_text('_statement_account_id') }}, {{ flex_text('"accountId"') }}
        ) as broker_account_id,
        {{ flex_id('"transactionID"') }} as transaction_id,
        {{ flex_id('"actionID"') }} as action_id,
        {{ flex_id('"tradeID"') }} as trade_id,
        {{ flex_text('"conid"') }} as conid,
        {{ flex_text('"isin"') }} as isin,

        ---------- strings
        {{ flex_text('"type"') }} as flex_type,
        {{ flex_text('"assetCategory"') }} as asset_category,
        {{ flex_text('"subCategory"') }} as sub_category,
        {{ flex_text('"symbol"') }} as symbol,
        {{ flex_text('"description"') }} as description,
        {{ flex_text('"listingExchange"') }} as listing_exchange,
        {{ flex_text('"currency"') }} as currency,
        {{ flex_text('"levelOfDetail"') }} as level_of_detail,

        ---------- numerics
        {{ flex_decimal('"amount"') }} as amount,

        ---------- dates and times (local time as IBKR wrote it)
        {{ flex_date('"reportDate"') }} as report_date,
        {{ flex_date('"settleDate"') }} as settle_date,
        {{ flex_date('"exDate"') }} as ex_date,
        coalesce(
            {{ flex_datetime('"dateTime"') }},
            cast({{ flex_date('"reportDate"') }} as timestamp)
        ) as transacted_at,
        {{ flex_zone('"dateTime"') }} as transacted_at_zone,
        (
            {{ flex_datetime('"dateTime"') }} is not null and {{ flex_has_time('"dateTime"') }}
        ) as transacted_at_has_time,

        ---------- lineage
        _extract_id as extract_id,
        _file_sha256 as file_sha256,
        _statement_index as statement_index,
        _row_index as row_index,
        _extracted_at as extracted_at,

        -- Identity across extracts: the transaction id, else a digest of the row, plus
        -- the row's occurrence in its statement (macros/flex_parsing.sql).
        {{ flex_row_key(cash_base_key) }} as cash_row_key

    from details

),

deduplicated as (

    select *
    from renamed
    qualify row_number() over (
            partition by broker_account_id, cash_row_key
            order by extracted_at desc, extract_id desc, statement_index desc, row_index desc
        ) = 1

)

select * from deduplicated
