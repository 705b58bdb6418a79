{#- One row per deduplicated IBKR cash movement with its fate: mapped through
    seeds/cash_type_mapping.csv by (type, direction), or unmapped with a reason.
    Refuse to guess: a (type, direction) without a seed row is never posted.
    A dividend reversal (a negative Dividends / Payment In Lieu row) is paired with the
    dividend it reverses (same account, type, instrument, currency, pay date and the
    opposite amount): the pair nets to nothing and neither is posted; should the
    original be in Wealthfolio already, marts.activity_corrections deletes it there.
    The activity is dated the day the cash moved at IBKR: the reportDate of a
    correction booked after the payment, else the payment's dateTime. -#}
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

ledger as (

    select * from {{ ref('stg_sync__posted_activities') }}

),

posted as (

    select distinct ledger.external_id
    from ledger
    where ledger.is_in_wealthfolio

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

-- Dividend reversals and the dividends they reverse, numbered within what makes them a
-- pair, so the n-th reversal takes the n-th original (each original reversed once).
reversal_candidates as (

    select
        with_direction.*,
        with_direction.direction = 'out' as is_reversal,
        row_number() over (
            partition by
                with_direction.broker_account_id,
                with_direction.flex_type,
                coalesce(with_direction.conid, with_direction.symbol),
                with_direction.currency,
                cast(with_direction.transacted_at as date),
                abs(with_direction.amount),
                with_direction.direction
            order by
                with_direction.report_date nulls first,
                try_cast(with_direction.transaction_id as hugeint) nulls last,
                with_direction.cash_row_key
        ) as pair_rank
    from with_direction
    where
        with_direction.flex_type in ('Dividends', 'Payment In Lieu Of Dividends')
        and with_direction.direction is not null
        and with_direction.transacted_at is not null

),

reversal_pairs as (

    select
        reversals.broker_account_id,
        reversals.cash_row_key as reversal_row_key,
        reversals.transaction_id as reversal_transaction_id,
        originals.cash_row_key as original_row_key,
        originals.transaction_id as original_transaction_id
    from reversal_candidates as reversals
    inner join reversal_candidates as originals
        on
            reversals.is_reversal
            and not originals.is_reversal
            and reversals.broker_account_id = originals.broker_account_id
            and reversals.flex_type = originals.flex_type
            and coalesce(reversals.conid, reversals.symbol)
            = coalesce(originals.conid, originals.symbol)
            and reversals.currency = originals.currency
            and cast(reversals.transacted_at as date) = cast(originals.transacted_at as date)
            and abs(reversals.amount) = abs(originals.amount)
            and reversals.pair_rank = originals.pair_rank

),

with_reversals as (

    select
        with_direction.*,
        as_reversal.original_transaction_id as reverses_transaction_id,
        as_original.reversal_transaction_id as reversed_by_transaction_id,
        posted_original.external_id is not null as reversed_original_was_posted,
        posted_self.external_id is not null as is_posted
    from with_direction
    left join reversal_pairs as as_reversal
        on
            with_direction.broker_account_id = as_reversal.broker_account_id
            and with_direction.cash_row_key = as_reversal.reversal_row_key
    left join reversal_pairs as as_original
        on
            with_direction.broker_account_id = as_original.broker_account_id
            and with_direction.cash_row_key = as_original.original_row_key
    left join posted as posted_original
        on posted_original.external_id = 'ibkr:cash:' || as_reversal.original_transaction_id
    left join posted as posted_self
        on posted_self.external_id = 'ibkr:cash:' || with_direction.transaction_id

),

with_mapping as (

    select
        with_reversals.*,
        cash_type_mapping.activity_type as mapped_activity_type,
        nullif(cash_type_mapping.subtype, '') as mapped_subtype,
        coalesce(cast(cash_type_mapping.carries_symbol as boolean), false) as carries_symbol,
        symbols.canonical_symbol,
        symbols.exchange_mic,
        symbols.quote_currency
    from with_reversals
    left join cash_type_mapping
        on
            with_reversals.flex_type = cash_type_mapping.flex_type
            and with_reversals.direction = cash_type_mapping.direction
    left join symbols
        on {{ instrument_join_condition(
            'with_reversals', 'symbols', exchange_expression='cast(null as varchar)'
        ) }}

),

-- External ids must be unique: should two rows carry one transactionID, one is mapped
-- and the other listed, never both posted and never silently lost.
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
                            with_mapping.cash_row_key asc
                    )
        end as transaction_id_rank
    from with_mapping

),

classified as (

    select
        ranked.*,
        case
            when ranked.transaction_id is null then 'no transactionID'
            when ranked.transaction_id_rank > 1
                then 'duplicate transactionID (another row carries the same id)'
            when ranked.amount is null then 'unparseable amount'
            when ranked.amount = 0 then 'zero amount'
            when ranked.reverses_transaction_id is not null and ranked.reversed_original_was_posted
                then 'dividend reversal of ibkr:cash:' || ranked.reverses_transaction_id
                    || ', posted earlier: deleted from Wealthfolio (marts.activity_corrections)'
            when ranked.reverses_transaction_id is not null
                then 'dividend reversal of ibkr:cash:' || ranked.reverses_transaction_id
                    || ': the pair nets to zero, neither is posted'
            when ranked.reversed_by_transaction_id is not null
                then 'dividend reversed by ibkr:cash:' || ranked.reversed_by_transaction_id
                    || ': the pair nets to zero'
                    || case when ranked.is_posted then ' (deleted from Wealthfolio)' else '' end
            when
                ranked.flex_type in ('Dividends', 'Payment In Lieu Of Dividends')
                and ranked.direction = 'out'
                then 'dividend reversal without a matching dividend (same instrument, pay date'
                    || ' and amount): review'
            when ranked.mapped_activity_type is null
                then 'no cash_type_mapping row for '
                    || coalesce(ranked.flex_type, '(no type)') || ' ' || ranked.direction
            when ranked.transacted_at is null then 'unparseable date'
            when ranked.currency is null then 'missing currency'
            when
                ranked.mapped_activity_type = 'DIVIDEND'
                and ranked.canonical_symbol is null
                then 'dividend without symbol'
            when {{ activity_time_zone('ranked.transacted_at_zone') }} is null
                then 'unknown time zone ' || ranked.transacted_at_zone
        end as unmapped_reason
    from ranked

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
        -- Dividends (Wealthfolio requires the asset) and withholding taxes name the
        -- instrument (seed column carries_symbol); other cash activities carry none.
        case
            when classified.carries_symbol then classified.canonical_symbol
        end as activity_symbol,
        {{ to_major_amount('abs(classified.amount)', 'classified.currency') }}
            as activity_amount,
        {{ to_major_amount('classified.amount', 'classified.currency') }}
            as signed_amount,
        {{ to_major_currency('classified.currency') }} as activity_currency,
        -- The day the cash moved: a row booked after its payment date (a correction,
        -- a late interest posting) moves cash on its reportDate.
        coalesce(
            case
                when classified.report_date > cast(classified.transacted_at as date)
                    then classified.report_date
            end,
            cast(classified.transacted_at as date)
        ) as activity_date,
        case
            when classified.report_date > cast(classified.transacted_at as date)
                then cast(classified.report_date as timestamp)
            else classified.transacted_at
        end as cash_moved_at,
        classified.transacted_at_has_time
        and not coalesce(classified.report_date > cast(classified.transacted_at as date), false)
            as cash_moved_at_has_time
    from classified

)

select * from final
