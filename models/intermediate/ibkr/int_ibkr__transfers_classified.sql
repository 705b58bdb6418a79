{#- One row per deduplicated IBKR transfer (ACATS, FOP, INTERNAL) with its fate and, when
    mapped, the Wealthfolio activity: shares in or out -> TRANSFER_IN / TRANSFER_OUT of
    the asset at IBKR's transfer price; cash in or out (assetCategory CASH) ->
    TRANSFER_IN / TRANSFER_OUT of cash. Cash moved with a share transfer is its own leg
    (int_ibkr__transfer_activities). Other asset categories are listed, never guessed. -#}
with

transfers as (

    select * from {{ ref('stg_ibkr__transfers') }}

),

symbols as (

    select * from {{ ref('int_ibkr__symbols_canonicalised') }}

),

with_symbols as (

    select
        transfers.*,
        symbols.canonical_symbol,
        symbols.exchange_mic,
        symbols.quote_currency,
        transfers.asset_category = 'CASH' as is_cash_transfer,
        -- Cash of a cash transfer: cashTransfer, else the quantity (IBKR writes the
        -- amount there for cash lines), signed by the direction.
        case
            when transfers.asset_category = 'CASH'
                then abs(coalesce(nullif(transfers.cash_transfer, 0), transfers.quantity))
                    * case when transfers.direction = 'OUT' then -1 else 1 end
            else coalesce(transfers.cash_transfer, 0)
        end as signed_cash,
        'transfer:' || transfers.transfer_row_key as source_row_key,
        'ibkr:transfer:' || regexp_replace(transfers.transfer_row_key, '^tx:', '')
            as external_id
    from transfers
    left join symbols
        on {{ instrument_join_condition(
            'transfers', 'symbols', exchange_expression='cast(null as varchar)'
        ) }}

),

classified as (

    select
        with_symbols.*,
        case
            when with_symbols.direction is null or with_symbols.direction not in ('IN', 'OUT')
                then 'transfer without direction IN or OUT'
            when with_symbols.asset_category is null then 'missing asset category'
            when with_symbols.asset_category not in ('STK', 'ETF', 'FUND', 'CASH')
                then 'transfer of unsupported asset category ' || with_symbols.asset_category
            when with_symbols.currency is null then 'missing currency'
            when with_symbols.transferred_at is null and with_symbols.report_date is null
                then 'unparseable date'
            when {{ activity_time_zone('with_symbols.transferred_at_zone') }} is null
                then 'unknown time zone ' || with_symbols.transferred_at_zone
            when with_symbols.is_cash_transfer and coalesce(with_symbols.signed_cash, 0) = 0
                then 'zero amount'
            when not with_symbols.is_cash_transfer and coalesce(with_symbols.quantity, 0) = 0
                then 'transfer without shares'
            when not with_symbols.is_cash_transfer and with_symbols.canonical_symbol is null
                then 'no symbol'
        end as unmapped_reason
    from with_symbols

),

final as (

    select
        classified.*,
        case when classified.unmapped_reason is null then 'mapped' else 'unmapped' end
            as disposition,
        coalesce(classified.transferred_at, cast(classified.report_date as timestamp))
            as transfer_moment,
        case when classified.direction = 'OUT' then 'TRANSFER_OUT' else 'TRANSFER_IN' end
            as activity_type,
        coalesce(
            classified.transfer_price,
            {{ decimal_ratio('classified.position_amount', 'classified.quantity') }},
            0
        ) as activity_unit_price
    from classified

)

select * from final
