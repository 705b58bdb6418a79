{#- One row per (Wealthfolio account, canonical symbol) held by IBKR or Wealthfolio now:
    broker quantity (each IBKR account's latest statement, SUMMARY OpenPositions, routed
    to its Wealthfolio account by wf_account_id_for) minus the quantity the latest
    snapshot of that Wealthfolio account implies. Full outer join: a position Wealthfolio still holds
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

-- Wealthfolio quantities under the key the broker side is routed to.
holdings_by_account as (

    select
        {{ wf_account_key('wealthfolio_holdings.wf_account_id') }} as wf_account_id,
        wealthfolio_holdings.symbol,
        wealthfolio_holdings.wf_quantity
    from wealthfolio_holdings

),

-- Each IBKR account's positions under the Wealthfolio account it feeds.
routed_positions as (

    select
        {{ wf_account_id_for('broker_positions.broker_account_id') }} as wf_account_id,
        broker_positions.*
    from broker_positions

),

routed_statements as (

    select
        {{ wf_account_id_for('latest_statements.broker_account_id') }} as wf_account_id,
        latest_statements.*
    from latest_statements

),

-- Several IBKR accounts may feed one Wealthfolio account: compare their total.
broker_by_symbol as (

    select
        broker_positions.wf_account_id,
        broker_positions.symbol,
        string_agg(
            distinct broker_positions.broker_account_id, ','
            order by broker_positions.broker_account_id
        ) as broker_account_id,
        cast(sum(broker_positions.position_quantity) as {{ decimal_type() }})
            as broker_quantity,
        max(broker_positions.statement_to_date) as as_of
    from routed_positions as broker_positions
    where broker_positions.symbol is not null
    group by broker_positions.wf_account_id, broker_positions.symbol

),

statement_summary as (

    select
        latest_statements.wf_account_id,
        string_agg(
            distinct latest_statements.broker_account_id, ','
            order by latest_statements.broker_account_id
        ) as broker_account_ids,
        max(latest_statements.to_date) as as_of
    from routed_statements as latest_statements
    group by latest_statements.wf_account_id

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
        max(keyed_snapshots.snapshot_at) as snapshot_at
    from keyed_snapshots
    group by keyed_snapshots.wf_account_id

),

joined as (

    select
        coalesce(broker_by_symbol.wf_account_id, holdings_by_account.wf_account_id)
            as wf_account_id,
        coalesce(broker_by_symbol.symbol, holdings_by_account.symbol) as symbol,
        coalesce(
            broker_by_symbol.broker_account_id, statement_summary.broker_account_ids
        ) as broker_account_id,
        coalesce(
            broker_by_symbol.broker_quantity, cast(0 as {{ decimal_type() }})
        ) as broker_quantity,
        case
            when snapshot_summary.snapshot_at is not null
                then coalesce(
                        holdings_by_account.wf_quantity, cast(0 as {{ decimal_type() }})
                    )
        end as wf_quantity,
        coalesce(broker_by_symbol.as_of, statement_summary.as_of) as as_of,
        snapshot_summary.snapshot_at as wf_snapshot_at
    from broker_by_symbol
    full outer join holdings_by_account
        on
            broker_by_symbol.symbol = holdings_by_account.symbol
            and broker_by_symbol.wf_account_id
            is not distinct from holdings_by_account.wf_account_id
    left join statement_summary
        on
            coalesce(broker_by_symbol.wf_account_id, holdings_by_account.wf_account_id)
            is not distinct from statement_summary.wf_account_id
    left join snapshot_summary
        on
            coalesce(broker_by_symbol.wf_account_id, holdings_by_account.wf_account_id)
            is not distinct from snapshot_summary.wf_account_id

),

final as (

    select
        ---------- ids
        joined.broker_account_id,
        joined.wf_account_id,
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
