{#- One row per (Wealthfolio account, currency) held by IBKR or Wealthfolio now: IBKR's
    endingCash in each account's latest statement that has a per-currency CashReport,
    routed to its Wealthfolio account by wf_account_id_for (as position_drift), minus the
    cash the latest snapshot of that Wealthfolio account implies by Wealthfolio's own
    rules (int_wealthfolio__cash_balances). Several IBKR accounts feeding one Wealthfolio
    account are compared as their total. Full outer join: cash Wealthfolio books in a
    currency IBKR no longer holds is drift too. Unknown is NULL, not zero: without a
    snapshot of the Wealthfolio account wf_cash and drift are NULL; without a
    per-currency CashReport of an IBKR account feeding it broker_cash and drift are NULL.
    Cash that existed before the first statement flexsync posted shows as drift until an
    opening DEPOSIT is entered in Wealthfolio. Rows where both sides hold nothing are
    left out. -#}
with

cash_reports as (

    select * from {{ ref('stg_ibkr__cash_reports') }}

),

statements as (

    select * from {{ ref('stg_ibkr__statements') }}

),

extracts as (

    select * from {{ ref('stg_ibkr__extracts') }}

),

wealthfolio_cash as (

    select * from {{ ref('int_wealthfolio__cash_balances') }}

),

latest_snapshot as (

    select * from {{ ref('int_wealthfolio__latest_snapshot') }}

),

-- Each account's latest statement with a per-currency CashReport (latest period end,
-- then latest generation, then latest landing), as int_ibkr__latest_statements orders.
statements_with_cash as (

    select
        statements.extract_id,
        statements.statement_index,
        statements.broker_account_id,
        statements.to_date,
        statements.generated_at,
        extracts.landed_at
    from statements
    inner join extracts
        on statements.extract_id = extracts.extract_id
    where
        statements.broker_account_id is not null
        and exists (
            select 1
            from cash_reports
            where
                cash_reports.extract_id = statements.extract_id
                and cash_reports.statement_index = statements.statement_index
        )
    qualify row_number() over (
            partition by statements.broker_account_id
            order by
                statements.to_date desc nulls last,
                statements.generated_at desc nulls last,
                extracts.landed_at desc,
                statements.statement_index desc
        ) = 1

),

-- Each IBKR account's latest cash statement under the Wealthfolio account it feeds.
routed_statements as (

    select
        {{ wf_account_id_for('statements_with_cash.broker_account_id') }} as wf_account_id,
        statements_with_cash.*
    from statements_with_cash

),

-- Several IBKR accounts may feed one Wealthfolio account: compare their total.
broker_by_currency as (

    select
        routed_statements.wf_account_id,
        cash_reports.currency,
        string_agg(
            distinct routed_statements.broker_account_id, ','
            order by routed_statements.broker_account_id
        ) as broker_account_id,
        cast(sum(cash_reports.ending_cash) as {{ decimal_type() }}) as broker_cash,
        max(coalesce(cash_reports.to_date, routed_statements.to_date)) as as_of
    from cash_reports
    inner join routed_statements
        on
            cash_reports.extract_id = routed_statements.extract_id
            and cash_reports.statement_index = routed_statements.statement_index
    where cash_reports.currency is not null
    group by routed_statements.wf_account_id, cash_reports.currency

),

broker_summary as (

    select
        routed_statements.wf_account_id,
        count(*) > 0 as has_cash_report,
        string_agg(
            distinct routed_statements.broker_account_id, ','
            order by routed_statements.broker_account_id
        ) as broker_account_ids,
        max(routed_statements.to_date) as as_of
    from routed_statements
    group by routed_statements.wf_account_id

),

-- Wealthfolio cash under the key the broker side is routed to.
cash_by_account as (

    select
        {{ wf_account_key('wealthfolio_cash.wf_account_id') }} as wf_account_id,
        wealthfolio_cash.currency,
        wealthfolio_cash.wf_cash
    from wealthfolio_cash

),

keyed_snapshots as (

    select
        {{ wf_account_key('latest_snapshot.wf_account_id') }} as wf_account_id,
        latest_snapshot.snapshot_at
    from latest_snapshot

),

snapshot_summary as (

    select
        keyed_snapshots.wf_account_id,
        count(*) > 0 as has_snapshot,
        max(keyed_snapshots.snapshot_at) as snapshot_at
    from keyed_snapshots
    group by keyed_snapshots.wf_account_id

),

joined as (

    select
        coalesce(broker_by_currency.wf_account_id, cash_by_account.wf_account_id)
            as wf_account_id,
        coalesce(broker_by_currency.currency, cash_by_account.currency) as currency,
        coalesce(
            broker_by_currency.broker_account_id, broker_summary.broker_account_ids
        ) as broker_account_id,
        -- A routed statement with a CashReport: a currency it lacks holds 0 there.
        case
            when broker_summary.has_cash_report
                then coalesce(
                        broker_by_currency.broker_cash, cast(0 as {{ decimal_type() }})
                    )
        end as broker_cash,
        case
            when snapshot_summary.has_snapshot
                then coalesce(cash_by_account.wf_cash, cast(0 as {{ decimal_type() }}))
        end as wf_cash,
        cash_by_account.currency is not null and cash_by_account.wf_cash is null
            as wf_cash_unknown,
        coalesce(broker_by_currency.as_of, broker_summary.as_of) as as_of,
        snapshot_summary.snapshot_at as wf_snapshot_at
    from broker_by_currency
    full outer join cash_by_account
        on
            broker_by_currency.currency = cash_by_account.currency
            and broker_by_currency.wf_account_id
            is not distinct from cash_by_account.wf_account_id
    left join broker_summary
        on
            coalesce(broker_by_currency.wf_account_id, cash_by_account.wf_account_id)
            is not distinct from broker_summary.wf_account_id
    left join snapshot_summary
        on
            coalesce(broker_by_currency.wf_account_id, cash_by_account.wf_account_id)
            is not distinct from snapshot_summary.wf_account_id

),

final as (

    select
        ---------- ids
        joined.broker_account_id,
        joined.wf_account_id,
        joined.currency,

        ---------- numerics
        joined.broker_cash,
        case when not joined.wf_cash_unknown then joined.wf_cash end as wf_cash,
        case
            when not joined.wf_cash_unknown
                then cast(joined.broker_cash - joined.wf_cash as {{ decimal_type() }})
        end as drift,

        ---------- dates and timestamps
        joined.as_of,
        joined.wf_snapshot_at
    from joined
    where
        coalesce(joined.broker_cash, 0) <> 0
        or coalesce(joined.wf_cash, 0) <> 0
        or joined.wf_cash_unknown

)

select * from final
