{#- One row per canonical symbol: the quantity Wealthfolio holds according to the POSTED
    activities of its current state (as of the latest snapshot). BUY/TRANSFER_IN add,
    SELL/TRANSFER_OUT subtract, a SPLIT multiplies what was held before it (its amount is
    the ratio): each movement is scaled by the product of the ratios of the later splits
    of its symbol. -#}
with

activities as (

    select * from {{ ref('stg_wealthfolio__activities') }}

),

latest_snapshot as (

    select * from {{ ref('int_wealthfolio__latest_snapshot') }}

),

posted as (

    select activities.*
    from activities
    inner join latest_snapshot
        on activities.state_snapshot_id = latest_snapshot.snapshot_id
    where
        activities.status = 'POSTED'
        and activities.symbol is not null
        and (
            {{ sql_string(flexsync_wf_account_id()) }} = ''
            or activities.wf_account_id = {{ sql_string(flexsync_wf_account_id()) }}
        )

),

movements as (

    select
        row_number() over () as movement_id,
        posted.symbol,
        posted.activity_at,
        case
            when posted.activity_type in ('BUY', 'TRANSFER_IN')
                then abs(coalesce(posted.quantity, 0))
            when posted.activity_type in ('SELL', 'TRANSFER_OUT')
                then -abs(coalesce(posted.quantity, 0))
        end as signed_quantity
    from posted
    where posted.activity_type in ('BUY', 'SELL', 'TRANSFER_IN', 'TRANSFER_OUT')

),

splits as (

    select
        posted.symbol,
        posted.activity_at,
        posted.amount as split_ratio
    from posted
    where posted.activity_type = 'SPLIT' and posted.amount > 0

),

later_splits as (

    select
        movements.movement_id,
        movements.symbol,
        movements.signed_quantity,
        list(splits.split_ratio order by splits.activity_at)
        filter (where splits.split_ratio is not null) as later_split_ratios
    from movements
    left join splits
        on
            movements.symbol = splits.symbol
            and movements.activity_at < splits.activity_at
    group by
        movements.movement_id,
        movements.symbol,
        movements.signed_quantity

),

scaled as (

    select
        later_splits.symbol,
        cast(
            later_splits.signed_quantity
            * coalesce({{ decimal_product('later_splits.later_split_ratios') }}, 1)
            as {{ decimal_type() }}
        ) as quantity
    from later_splits

),

final as (

    select
        scaled.symbol,
        cast(sum(scaled.quantity) as {{ decimal_type() }}) as wf_quantity
    from scaled
    group by scaled.symbol

)

select * from final
