{#- One row per currency held by IBKR or Wealthfolio now: IBKR's endingCash in each
    account's latest statement that has a per-currency CashReport, minus the cash the
    latest Wealthfolio snapshot implies by Wealthfolio's own rules
    (int_wealthfolio__cash_balances). Several IBKR accounts feeding the one Wealthfolio
    account are compared as their total, as in position_drift. Full outer join: cash
    Wealthfolio books in a currency IBKR no longer holds is drift too. Unknown is NULL,
    not zero: without any Wealthfolio snapshot wf_cash and drift are NULL; without any
    per-currency CashReport broker_cash and drift are NULL. Cash that existed before
    the first statement flexsync posted shows as drift until an opening DEPOSIT is
    entered in Wealthfolio. Rows where both sides hold nothing are left out. -#}
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

broker_by_currency as (

    select
        cash_reports.currency,
        string_agg(
            distinct statements_with_cash.broker_account_id, ','
            order by statements_with_cash.broker_account_id
        ) as broker_account_id,
        cast(sum(cash_reports.ending_cash) as {{ decimal_type() }}) as broker_cash,
        max(coalesce(cash_reports.to_date, statements_with_cash.to_date)) as as_of
    from cash_reports
    inner join statements_with_cash
        on
            cash_reports.extract_id = statements_with_cash.extract_id
            and cash_reports.statement_index = statements_with_cash.statement_index
    where cash_reports.currency is not null
    group by cash_reports.currency

),

broker_summary as (

    select
        count(*) > 0 as has_cash_report,
        string_agg(
            distinct statements_with_cash.broker_account_id, ','
            order by statements_with_cash.broker_account_id
        ) as broker_account_ids,
        max(statements_with_cash.to_date) as as_of
    from statements_with_cash

),

snapshot_summary as (

    select
        count(*) > 0 as has_snapshot,
        max(latest_snapshot.snapshot_at) as snapshot_at
    from latest_snapshot

),

joined as (

    select
        coalesce(broker_by_currency.currency, wealthfolio_cash.currency) as currency,
        coalesce(
            broker_by_currency.broker_account_id, broker_summary.broker_account_ids
        ) as broker_account_id,
        case
            when broker_summary.has_cash_report
                then coalesce(
                        broker_by_currency.broker_cash, cast(0 as {{ decimal_type() }})
                    )
        end as broker_cash,
        case
            when snapshot_summary.has_snapshot
                then coalesce(wealthfolio_cash.wf_cash, cast(0 as {{ decimal_type() }}))
        end as wf_cash,
        wealthfolio_cash.currency is not null and wealthfolio_cash.wf_cash is null
            as wf_cash_unknown,
        coalesce(broker_by_currency.as_of, broker_summary.as_of) as as_of,
        snapshot_summary.snapshot_at as wf_snapshot_at
    from broker_by_currency
    full outer join wealthfolio_cash
        on broker_by_currency.currency = wealthfolio_cash.currency
    cross join broker_summary
    cross join snapshot_summary

),

final as (

    select
        ---------- ids
        joined.broker_account_id,
        nullif({{ sql_string(flexsync_wf_account_id()) }}, '') as wf_account_id,
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
