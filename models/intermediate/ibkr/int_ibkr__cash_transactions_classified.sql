{#- One row per deduplicated IBKR cash movement with its fate: mapped through
    seeds/cash_type_mapping.csv by (type, direction), or unmapped with a reason.
    Refuse to guess: a (type, direction) without a seed row is never posted. -#}
with

cash_transactions as (

    select * from {{ ref('stg_ibkr__cash_transactions') }}

),

symbols as (

    select * from {{ ref('int_ibkr__symbols_canonicalised') }}

),

cash_type_mapping as (

    select * from {{ ref('cash_type_mapping') }}

),

with_direction as (

    select
        cash_transactions.*,
        case
            when cash_transactions.amount > 0 then 'in'
            when cash_transactions.amount < 0 then 'out'
        end as direction
    from cash_transactions

),

with_mapping as (

    select
        with_direction.*,
        cash_type_mapping.activity_type as mapped_activity_type,
        nullif(cash_type_mapping.subtype, '') as mapped_subtype,
        symbols.canonical_symbol,
        symbols.exchange_mic,
        symbols.quote_currency
    from with_direction
    left join cash_type_mapping
        on
            with_direction.flex_type = cash_type_mapping.flex_type
            and with_direction.direction = cash_type_mapping.direction
    left join symbols
        on {{ instrument_join_condition(
            'with_direction', 'symbols', exchange_expression='cast(null as varchar)'
        ) }}

),

-- External ids must be unique: should two accounts' rows carry one transactionID,
-- one is mapped and the other listed, never both posted and never silently lost.
ranked as (

    select
        with_mapping.*,
        case
            when with_mapping.transaction_id is not null
                then row_number() over (
                        partition by
                            with_mapping.transaction_id is not null,
                            with_mapping.transaction_id
                        order by
                            with_mapping.extracted_at desc,
                            with_mapping.broker_account_id asc,
                            with_mapping.row_index asc
                    )
        end as transaction_id_rank
    from with_mapping

),

classified as (

    select
        with_mapping.*,
        case
            when with_mapping.transaction_id is null then 'no transactionID'
            when with_mapping.transaction_id_rank > 1
                then 'duplicate transactionID (another row carries the same id)'
            when with_mapping.amount is null then 'unparseable amount'
            when with_mapping.amount = 0 then 'zero amount'
            when with_mapping.mapped_activity_type is null
                then 'no cash_type_mapping row for this type and direction'
            when with_mapping.transacted_at is null then 'unparseable date'
            when with_mapping.currency is null then 'missing currency'
            when
                with_mapping.mapped_activity_type = 'DIVIDEND'
                and with_mapping.canonical_symbol is null
                then 'dividend without symbol'
        end as unmapped_reason
    from ranked as with_mapping

),

final as (

    select
        classified.*,
        case
            when classified.unmapped_reason is null then 'mapped' else 'unmapped'
        end as disposition,
        'ibkr:cash:' || classified.transaction_id as external_id,
        classified.mapped_activity_type as activity_type,
        classified.mapped_subtype as activity_subtype,
        -- Only DIVIDEND is asset-backed in Wealthfolio; other cash activities carry none.
        case
            when classified.mapped_activity_type = 'DIVIDEND'
                then classified.canonical_symbol
        end as activity_symbol,
        {{ to_major_amount('abs(classified.amount)', 'classified.currency') }}
            as activity_amount,
        {{ to_major_amount('classified.amount', 'classified.currency') }}
            as signed_amount,
        {{ to_major_currency('classified.currency') }} as activity_currency
    from classified

)

select * from final
