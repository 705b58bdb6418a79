{#- One row per IBKR trade execution, latest extract wins. Incremental: a nightly
    build reads only the extracts landed since the last one (macros/incremental.sql). -#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['broker_account_id', 'trade_row_key'],
        on_schema_change='fail'
    )
}}

{#- The row's own identity: its id, else a digest of what it says. -#}
{% set trade_base_key -%}
coalesce(
    'tx:' || {{ flex_id('"transactionID"') }},
    'trade:' || {{ flex_id('"tradeID"') }},
    'md5:' || md5(concat_ws(
        '|', _statement_account_id, symbol, conid, "tradeDate", "tradeTime",
        "dateTime", "buySell", quantity, "tradePrice", "transactionType"
    ))
)
{%- endset %}

with

source as (

    select * from {{ source('ibkr', 'trades') }}
    where {{ landed_since_last_build() }}

),

-- Only executions count: Order, SymbolSummary, AssetSummary and Lot rows repeat them.
executions as (

    select *
    from source
    where
        _row_tag = 'Trade'
        and coalesce(nullif(trim("levelOfDetail"), ''), 'EXECUTION') = 'EXECUTION'

),

-- Latest extract wins, decided on a narrow projection (a landed row's identity and its
-- key): a window over the full rows held every column of every landed execution in
-- DuckDB's memory at once (a 10-year backfill ran out of 64 MB). The winners' full
-- rows then stream through a join. (_extract_id, _row_index) is unique per landed row.
keyed as (

    select
        _extract_id,
        _statement_index,
        _row_index,
        _extracted_at,
        coalesce(
            {{ flex_text('_statement_account_id') }}, {{ flex_text('"accountId"') }}
        ) as broker_account_id,
        -- Identity of the source row across extracts: the transaction id when there is
        -- one, else the trade id, else a digest of what the row says (macros/flex_parsing).
        {{ flex_row_key(trade_base_key) }} as trade_row_key

    from executions

),

latest as (

    select
        _extract_id as latest_extract_id,
        _row_index as latest_row_index,
        trade_row_key
    from keyed
    qualify row_number() over (
            partition by broker_account_id, trade_row_key
            order by _extracted_at desc, _extract_id desc, _statement_index desc, _row_index desc
        ) = 1

),

latest_executions as (

    select
        executions.*,
        latest.trade_row_key
    from executions
    inner join latest
        on
            executions._extract_id = latest.latest_extract_id
            and executions._row_index = latest.latest_row_index

),

renamed as (

    select
        ---------- ids
        coalesce(
            {{ flex_text('_statement_account_id') }}, {{ flex_text('"accountId"') }}
        ) as broker_account_id,
        {{ flex_id('"tradeID"') }} as trade_id,
        {{ flex_id('"transactionID"') }} as transaction_id,
        {{ flex_id('"origTradeID"') }} as orig_trade_id,
        {{ flex_id('"origTransactionID"') }} as orig_transaction_id,
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
        {{ flex_text('"ibCommissionCurrency"') }} as commission_currency,
        {{ flex_text('"buySell"') }} as buy_sell,
        {{ flex_text('"transactionType"') }} as transaction_type,
        {{ flex_text('"notes"') }} as notes,
        {{ flex_text('"levelOfDetail"') }} as level_of_detail,

        ---------- numerics
        {{ flex_decimal('"quantity"') }} as quantity,
        {{ flex_decimal('"tradePrice"') }} as trade_price,
        {{ flex_decimal('"ibCommission"') }} as ib_commission,
        {{ flex_decimal('"proceeds"') }} as proceeds,
        {{ flex_decimal('"netCash"') }} as net_cash,
        {{ flex_decimal('"taxes"') }} as taxes,
        {{ flex_decimal('"multiplier"') }} as multiplier,

        ---------- booleans
        (
            coalesce(trim("buySell"), '') like '%(Ca.)'
            or coalesce(trim("transactionType"), '') in ('TradeCancel', 'FracShareCancel')
        ) as is_cancellation,

        ---------- dates and times (local time as IBKR wrote it)
        {{ flex_date('"tradeDate"') }} as trade_date,
        {{ flex_time('"tradeTime"') }} as trade_time,
        {{ flex_date('"reportDate"') }} as report_date,
        coalesce(
            {{ flex_date('"tradeDate"') }} + {{ flex_time('"tradeTime"') }},
            {{ flex_datetime('"dateTime"') }},
            cast({{ flex_date('"tradeDate"') }} as timestamp)
        ) as traded_at,
        coalesce(
            {{ flex_time_zone('"tradeTime"') }}, {{ flex_zone('"dateTime"') }}
        ) as traded_at_zone,
        (
            (
                {{ flex_date('"tradeDate"') }} is not null
                and {{ flex_time('"tradeTime"') }} is not null
            )
            or (
                {{ flex_date('"tradeDate"') }} is null
                or {{ flex_time('"tradeTime"') }} is null
            )
            and {{ flex_datetime('"dateTime"') }} is not null
            and {{ flex_has_time('"dateTime"') }}
        ) as traded_at_has_time,

        ---------- lineage
        _extract_id as extract_id,
        _file_sha256 as file_sha256,
        _statement_index as statement_index,
        _row_index as row_index,
        _extracted_at as extracted_at,
        trade_row_key

    from latest_executions

)

select * from renamed
