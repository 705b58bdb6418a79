{#- One row per IBKR corporate action row (DETAIL level, or no level), latest extract
    wins. A split, merger or ISIN change is one row per affected line (the old line's
    shares out, the new line's shares in) sharing an actionID. -#}

{#- The row's own identity: its transaction id, else a digest of what it says. -#}
{% set corporate_action_base_key -%}
coalesce(
    'tx:' || {{ flex_id('"transactionID"') }},
    'md5:' || md5(concat_ws(
        '|', _statement_account_id, type, symbol, conid, currency, quantity,
        proceeds, amount, "dateTime", "reportDate", description
    ))
)
{%- endset %}

with

source as (

    select * from {{ source('ibkr', 'corporate_actions') }}

),

-- SUMMARY rows repeat the DETAIL rows: DETAIL or no level only.
details as (

    select *
    from source
    where
        _row_tag = 'CorporateAction'
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
        {{ flex_text('"conid"') }} as conid,
        {{ flex_text('"isin"') }} as isin,

        ---------- strings
        {{ flex_text('"type"') }} as action_type,
        {{ flex_text('"assetCategory"') }} as asset_category,
        {{ flex_text('"symbol"') }} as symbol,
        coalesce(
            {{ flex_text('"actionDescription"') }}, {{ flex_text('"description"') }}
        ) as description,
        {{ flex_text('"listingExchange"') }} as listing_exchange,
        {{ flex_text('"currency"') }} as currency,

        ---------- numerics
        {{ flex_decimal('"quantity"') }} as quantity,
        {{ flex_decimal('"proceeds"') }} as proceeds,
        {{ flex_decimal('"amount"') }} as amount,
        {{ flex_decimal('"value"') }} as market_value,

        ---------- dates (local time as IBKR wrote it)
        {{ flex_date('"reportDate"') }} as report_date,
        {{ flex_datetime('"dateTime"') }} as action_at,
        {{ flex_zone('"dateTime"') }} as action_at_zone,
        {{ flex_has_time('"dateTime"') }} as action_at_has_time,

        ---------- lineage
        _extract_id as extract_id,
        _statement_index as statement_index,
        _row_index as row_index,
        _extracted_at as extracted_at,

        {{ flex_row_key(corporate_action_base_key) }} as corporate_action_row_key

    from details

),

deduplicated as (

    select *
    from renamed
    qualify row_number() over (
            partition by broker_account_id, corporate_action_row_key
            order by extracted_at desc, extract_id desc, statement_index desc, row_index desc
        ) = 1

)

select * from deduplicated
