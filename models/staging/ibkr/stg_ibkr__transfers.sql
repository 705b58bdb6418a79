{#- One row per IBKR position or cash transfer in or out of the account (ACATS, FOP,
    INTERNAL), DETAIL level or no level, latest extract wins. -#}

{#- The row's own identity: its transaction id, else a digest of what it says. -#}
{% set transfer_base_key -%}
coalesce(
    'tx:' || {{ flex_id('"transactionID"') }},
    'md5:' || md5(concat_ws(
        '|', _statement_account_id, type, direction, symbol, conid, currency, quantity,
        "cashTransfer", "date", "dateTime", "reportDate", account
    ))
)
{%- endset %}

with

source as (

    select * from {{ source('ibkr', 'transfers') }}

),

details as (

    select *
    from source
    where
        _row_tag = 'Transfer'
        and coalesce(nullif(trim("levelOfDetail"), ''), 'DETAIL') = 'DETAIL'

),

renamed as (

    select
        ---------- ids
        coalesce(
            {{ flex_text('_statement_account_id') }}, {{ flex_text('"accountId"') }}
        ) as broker_account_id,
        {{ flex_id('"transactionID"') }} as transaction_id,
        {{ flex_text('"conid"') }} as conid,
        {{ flex_text('"isin"') }} as isin,

        ---------- strings
        {{ flex_text('"type"') }} as transfer_type,
        upper({{ flex_text('"direction"') }}) as direction,
        {{ flex_text('"assetCategory"') }} as asset_category,
        {{ flex_text('"symbol"') }} as symbol,
        {{ flex_text('"description"') }} as description,
        {{ flex_text('"listingExchange"') }} as listing_exchange,
        {{ flex_text('"currency"') }} as currency,
        {{ flex_text('"account"') }} as counterparty_account,

        ---------- numerics
        {{ flex_decimal('"quantity"') }} as quantity,
        {{ flex_decimal('"transferPrice"') }} as transfer_price,
        {{ flex_decimal('"positionAmount"') }} as position_amount,
        {{ flex_decimal('"cashTransfer"') }} as cash_transfer,

        ---------- dates (local time as IBKR wrote it)
        {{ flex_date('"reportDate"') }} as report_date,
        coalesce(
            {{ flex_datetime('"dateTime"') }}, {{ flex_datetime('"date"') }}
        ) as transferred_at,
        {{ flex_zone('"dateTime"') }} as transferred_at_zone,
        {{ flex_has_time('"dateTime"') }} as transferred_at_has_time,

        ---------- lineage
        _extract_id as extract_id,
        _statement_index as statement_index,
        _row_index as row_index,
        _extracted_at as extracted_at,

        {{ flex_row_key(transfer_base_key) }} as transfer_row_key

    from details

),

deduplicated as (

    select *
    from renamed
    qualify row_number() over (
            partition by broker_account_id, transfer_row_key
            order by extracted_at desc, extract_id desc, statement_index desc, row_index desc
        ) = 1

)

select * from deduplicated
