{#- One row per transaction tax IBKR charged on a trade (TransactionTaxes section, e.g.
    UK stamp duty, French FTT), DETAIL level or no level, latest extract wins. -#}

{#- The row's own identity: a digest of what it says (the section has no id). -#}
{% set transaction_tax_base_key -%}
'md5:' || md5(concat_ws(
    '|', _statement_account_id, "tradeId", symbol, conid, currency, "taxAmount",
    "taxDescription", "date", "reportDate", quantity
))
{%- endset %}

with

source as (

    select * from {{ source('ibkr', 'transaction_taxes') }}

),

details as (

    select *
    from source
    where
        _row_tag = 'TransactionTax'
        and coalesce(nullif(trim("levelOfDetail"), ''), 'DETAIL') = 'DETAIL'

),

renamed as (

    select
        ---------- ids
        coalesce(
            {{ flex_text('_statement_account_id') }}, {{ flex_text('"accountId"') }}
        ) as broker_account_id,
        {{ flex_id('"tradeId"') }} as trade_id,
        {{ flex_text('"conid"') }} as conid,

        ---------- strings
        {{ flex_text('"assetCategory"') }} as asset_category,
        {{ flex_text('"symbol"') }} as symbol,
        {{ flex_text('"taxDescription"') }} as tax_description,
        {{ flex_text('"description"') }} as description,
        {{ flex_text('"currency"') }} as currency,

        ---------- numerics
        {{ flex_decimal('"taxAmount"') }} as tax_amount,

        ---------- dates (local time as IBKR wrote it)
        {{ flex_date('"reportDate"') }} as report_date,
        {{ flex_datetime('"date"') }} as taxed_at,
        {{ flex_zone('"date"') }} as taxed_at_zone,
        {{ flex_has_time('"date"') }} as taxed_at_has_time,

        ---------- lineage
        _extract_id as extract_id,
        _statement_index as statement_index,
        _row_index as row_index,
        _extracted_at as extracted_at,

        {{ flex_row_key(transaction_tax_base_key) }} as transaction_tax_row_key

    from details

),

deduplicated as (

    select *
    from renamed
    qualify row_number() over (
            partition by broker_account_id, transaction_tax_row_key
            order by extracted_at desc, extract_id desc, statement_index desc, row_index desc
        ) = 1

)

select * from deduplicated
