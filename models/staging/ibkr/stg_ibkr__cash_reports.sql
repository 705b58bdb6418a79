{#- One row per currency per landed statement: IBKR's cash in that currency at the start
    and end of the statement's period (CashReport, CashReportCurrency rows at
    levelOfDetail 'Currency'; the BASE_SUMMARY row, all currencies converted to the base
    currency, is left out). History is kept: marts.cash_drift reads each account's
    latest statement. Incremental like the other staging models (macros/incremental.sql). -#}
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

    select * from {{ source('ibkr', 'cash_report') }}
    where {{ landed_since_last_build() }}

),

currencies as (

    select *
    from source
    where
        _row_tag = 'CashReportCurrency'
        and lower(trim("levelOfDetail")) = 'currency'
        and upper(trim(currency)) <> 'BASE_SUMMARY'

),

renamed as (

    select
        ---------- ids
        coalesce(
            {{ flex_text('_statement_account_id') }}, {{ flex_text('"accountId"') }}
        ) as broker_account_id,

        ---------- strings
        {{ flex_text('"currency"') }} as currency,
        {{ flex_text('"levelOfDetail"') }} as level_of_detail,

        ---------- numerics
        {{ flex_decimal('"startingCash"') }} as starting_cash,
        {{ flex_decimal('"endingCash"') }} as ending_cash,
        {{ flex_decimal('"endingSettledCash"') }} as ending_settled_cash,

        ---------- dates
        {{ flex_date('"fromDate"') }} as from_date,
        {{ flex_date('"toDate"') }} as to_date,

        ---------- lineage
        _extract_id as extract_id,
        _file_sha256 as file_sha256,
        _statement_index as statement_index,
        _row_index as row_index,
        _extracted_at as extracted_at

    from currencies

)

select * from renamed
