{#- One row per (Wealthfolio account, canonical symbol): the quantity Wealthfolio holds
    according to the POSTED activities of the account's current state (as of its latest
    snapshot). BUY/TRANSFER_IN add,
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
        and {{ is_configured_wf_account('activities.wf_account_id') }}

),

movements as (

    select
        row_number() over () as movement_id,
        {{ wf_account_key('posted.wf_account_id') }} as wf_account_id,
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
        {{ wf_account_key('posted.wf_account_id') }} as wf_account_id,
        posted.symbol,
        posted.activity_at,
        posted.amount as split_ratio
    from posted
    where posted.activity_type = 'SPLIT' and posted.amount > 0

),

later_splits as (

    select
        movements.movement_id,
        movements.wf_account_id,
        movements.symbol,
        movements.signed_quantity,
        list(splits.split_ratio order by splits.activity_at)
        filter (where splits.split_ratio is not null) as later_split_ratios
    from movements
    left join splits
        on
            movements.symbol = splits.symbol
            and movements.wf_account_id is not distinct from splits.wf_account_id
            and movements.activity_at < splits.activity_at
    group by
        movements.movement_id,
        movements.wf_account_id,
        movements.symbol,
        movements.signed_quantity

),

scaled as (

    select
        later_splits.wf_account_id,
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
        scaled.wf_account_id,
        scaled.symbol,
        cast(sum(scaled.quantity) as {{ decimal_type() }}) as wf_quantity
    from scaled
    group by scaled.wf_account_id, scaled.symbol

)

select * from final
