{#- One row per canonical symbol held by IBKR or Wealthfolio now: broker quantity (each
    account's latest statement, SUMMARY OpenPositions) minus the quantity the latest
    Wealthfolio snapshot implies. Full outer join: a position Wealthfolio still holds
    but IBKR closed is drift too. Without any Wealthfolio snapshot, wf_quantity and
    drift are NULL (unknown, not zero). Rows where both sides hold nothing are left out. -#}
with

broker_positions as (

    select * from {{ ref('int_ibkr__open_positions_latest') }}

),

wealthfolio_holdings as (

    select * from {{ ref('int_wealthfolio__holdings') }}

),

latest_snapshot as (

    select * from {{ ref('int_wealthfolio__latest_snapshot') }}

),

latest_statements as (

    select * from {{ ref('int_ibkr__latest_statements') }}

),

-- Several IBKR accounts may feed the one Wealthfolio account: compare their total.
broker_by_symbol as (

    select
        broker_positions.symbol,
        string_agg(
            distinct broker_positions.broker_account_id, ','
            order by broker_positions.broker_account_id
        ) as broker_account_id,
        cast(sum(broker_positions.position_quantity) as {{ decimal_type() }})
            as broker_quantity,
        max(broker_positions.statement_to_date) as as_of
    from broker_positions
    where broker_positions.symbol is not null
    group by broker_positions.symbol

),

statement_summary as (

    select
        string_agg(
            distinct latest_statements.broker_account_id, ','
            order by latest_statements.broker_account_id
        ) as broker_account_ids,
        max(latest_statements.to_date) as as_of
    from latest_statements

),

snapshot_summary as (

    select
        count(*) > 0 as has_snapshot,
        max(latest_snapshot.snapshot_at) as snapshot_at
    from latest_snapshot

),

joined as (

    select
        coalesce(broker_by_symbol.symbol, wealthfolio_holdings.symbol) as symbol,
        coalesce(
            broker_by_symbol.broker_account_id, statement_summary.broker_account_ids
        ) as broker_account_id,
        coalesce(
            broker_by_symbol.broker_quantity, cast(0 as {{ decimal_type() }})
        ) as broker_quantity,
        case
            when snapshot_summary.has_snapshot
                then coalesce(
                        wealthfolio_holdings.wf_quantity, cast(0 as {{ decimal_type() }})
                    )
        end as wf_quantity,
        coalesce(broker_by_symbol.as_of, statement_summary.as_of) as as_of,
        snapshot_summary.snapshot_at as wf_snapshot_at
    from broker_by_symbol
    full outer join wealthfolio_holdings
        on broker_by_symbol.symbol = wealthfolio_holdings.symbol
    cross join statement_summary
    cross join snapshot_summary

),

final as (

    select
        ---------- ids
        joined.broker_account_id,
        nullif({{ sql_string(flexsync_wf_account_id()) }}, '') as wf_account_id,
        joined.symbol,

        ---------- numerics
        joined.broker_quantity,
        joined.wf_quantity,
        cast(joined.broker_quantity - joined.wf_quantity as {{ decimal_type() }}) as drift,

        ---------- dates and timestamps
        joined.as_of,
        joined.wf_snapshot_at
    from joined
    where joined.broker_quantity <> 0 or coalesce(joined.wf_quantity, 0) <> 0

)

select * from final
