{#- One row per (Wealthfolio account, currency): the cash Wealthfolio holds in each
    configured account (IBKR_ACCOUNT_ID, or each account of IBKR_ACCOUNT_MAP; keyed by
    wf_account_key, as int_wealthfolio__holdings) according to the POSTED activities of
    the account's current state (as of its latest snapshot), booked by
    Wealthfolio's own rules (docs/upstream.md#cash-rules; holdings_calculator.rs,
    compiler.rs, snapshot_service.rs). fakes/wealthfolio/rules.py is the same
    rules in Python; a test computes both on the same activities and compares them.
    BUY −(q × p + fee), SELL +(q × p − fee), DEPOSIT/DIVIDEND/INTEREST/CREDIT
    +(amount − fee), WITHDRAWAL −(amount + fee), FEE/TAX −fee when fee ≠ 0 else −amount,
    cash TRANSFER_IN +(amount − fee), cash TRANSFER_OUT −(amount + fee), a security
    transfer −fee; SPLIT, ADJUSTMENT, UNKNOWN none. All numbers are taken absolute.
    A DRIP dividend / STAKING_REWARD interest is its income plus a BUY of the shares.
    A BUY or SELL in another currency than the account's, with an fxRate, is booked in
    the account currency (× fxRate). Before a split, Wealthfolio rescales the
    activities of the asset dated on an earlier day: quantity × ratio and unit price ÷
    ratio, each rounded to 8 places half-even, so a trade's cash is booked from the
    rounded figures. Days are UTC days (the user's timezone is not in the snapshot). -#}
with

activities as (

    select * from {{ ref('stg_wealthfolio__activities') }}

),

latest_snapshot as (

    select * from {{ ref('int_wealthfolio__latest_snapshot') }}

),

posted as (

    select
        {{ wf_account_key('activities.wf_account_id') }} as wf_account_id,
        activities.wf_activity_id,
        activities.activity_type,
        activities.subtype,
        activities.currency,
        activities.account_currency,
        activities.activity_at,
        cast(activities.activity_at as date) as activity_day,
        -- Splits apply per asset; a cash activity has none.
        coalesce(activities.asset_id, activities.symbol) as asset_key,
        abs(activities.quantity) as quantity,
        abs(activities.unit_price) as unit_price,
        abs(activities.amount) as amount,
        coalesce(abs(activities.fee), 0) as fee,
        abs(activities.fx_rate) as fx_rate
    from activities
    inner join latest_snapshot
        on activities.state_snapshot_id = latest_snapshot.snapshot_id
    where
        activities.status = 'POSTED'
        and {{ is_configured_wf_account('activities.wf_account_id') }}

),

-- compiler.rs: a DRIP dividend is a DIVIDEND (its amount, else q × p) plus a BUY of
-- the shares without fee; a STAKING_REWARD interest an INTEREST plus such a BUY.
legs as (

    select
        posted.wf_account_id,
        posted.wf_activity_id,
        posted.activity_type,
        posted.subtype,
        posted.currency,
        posted.account_currency,
        posted.activity_at,
        posted.activity_day,
        posted.asset_key,
        posted.quantity,
        posted.unit_price,
        case
            when posted.activity_type = 'DIVIDEND' and posted.subtype = 'DRIP'
                then coalesce(posted.amount, posted.quantity * posted.unit_price)
            else posted.amount
        end as amount,
        posted.fee,
        posted.fx_rate
    from posted

    union all

    select
        posted.wf_account_id,
        posted.wf_activity_id,
        'BUY' as activity_type,
        null as subtype,
        posted.currency,
        posted.account_currency,
        posted.activity_at,
        posted.activity_day,
        posted.asset_key,
        posted.quantity,
        posted.unit_price,
        null as amount,
        0 as fee,
        posted.fx_rate
    from posted
    where
        (posted.activity_type = 'DIVIDEND' and posted.subtype = 'DRIP')
        or (posted.activity_type = 'INTEREST' and posted.subtype = 'STAKING_REWARD')

),

numbered_legs as (

    select
        row_number() over () as leg_id,
        legs.*
    from legs

),

-- One split per account, asset and day (the day's earliest), ratio > 0: Wealthfolio
-- keeps holdings per account, so a split rescales that account's trades only.
splits as (

    select
        numbered_legs.wf_account_id,
        numbered_legs.asset_key,
        numbered_legs.activity_day as split_day,
        numbered_legs.amount as split_ratio
    from numbered_legs
    where
        numbered_legs.activity_type = 'SPLIT'
        and numbered_legs.asset_key is not null
        and numbered_legs.amount > 0
    qualify row_number() over (
            partition by
                numbered_legs.wf_account_id,
                numbered_legs.asset_key,
                numbered_legs.activity_day
            order by numbered_legs.activity_at, numbered_legs.wf_activity_id
        ) = 1

),

later_splits as (

    select
        numbered_legs.leg_id,
        {{ decimal_product(
            'list(splits.split_ratio order by splits.split_day)
            filter (where splits.split_ratio is not null)'
        ) }} as split_factor
    from numbered_legs
    left join splits
        on
            numbered_legs.asset_key = splits.asset_key
            and numbered_legs.wf_account_id is not distinct from splits.wf_account_id
            and numbered_legs.activity_day < splits.split_day
            and numbered_legs.activity_type <> 'SPLIT'
    group by numbered_legs.leg_id

),

-- The unit price ÷ factor, rounded to 8 places half-even, in exact integer arithmetic
-- (DuckDB divides DECIMALs as DOUBLE): price × 10^18 // (factor × 10^10), then the
-- remainder decides the rounding.
price_division as (

    select
        numbered_legs.*,
        later_splits.split_factor,
        case
            when numbered_legs.unit_price < 100000000
                then cast(numbered_legs.unit_price * 10000000000 as hugeint) * 100000000
        end as numerator,
        case
            when later_splits.split_factor < 1000000000
                then cast(later_splits.split_factor * 10000000000 as hugeint)
        end as denominator
    from numbered_legs
    inner join later_splits
        on numbered_legs.leg_id = later_splits.leg_id

),

-- Every branch is DECIMAL(38, 10): DuckDB gives a CASE the narrowest common scale, so
-- an 8-place branch would round an unsplit 10-place price or quantity to 8 places.
adjusted as (

    select
        price_division.leg_id,
        price_division.wf_account_id,
        price_division.activity_type,
        price_division.currency,
        price_division.account_currency,
        price_division.asset_key,
        price_division.amount,
        price_division.fee,
        price_division.fx_rate,
        case
            when price_division.split_factor is null or price_division.quantity is null
                then price_division.quantity
            when {{ product_fits('price_division.quantity', 'price_division.split_factor') }}
                then cast(
                        round_even(price_division.quantity * price_division.split_factor, 8)
                        as {{ decimal_type() }}
                    )
        end as quantity,
        case
            when
                price_division.split_factor is null
                or coalesce(price_division.unit_price, 0) = 0
                then price_division.unit_price
            when price_division.denominator > 0 and price_division.numerator is not null
                then cast(
                        price_division.numerator // price_division.denominator
                        + case
                            when
                                2 * (price_division.numerator % price_division.denominator)
                                > price_division.denominator
                                then 1
                            when
                                2 * (price_division.numerator % price_division.denominator)
                                = price_division.denominator
                                then (price_division.numerator // price_division.denominator) % 2
                            else 0
                        end
                        as decimal(38, 0)
                    ) * cast(0.00000001 as {{ decimal_type() }})
        end as unit_price
    from price_division

),

-- The signed cash change of each leg in its own currency, kept at 20 places (q × p
-- of two 10-place numbers is exact there); the total is rounded once, at the end.
-- A figure too large to compute is NULL, and makes its currency's total unknown.
cash_effects as (

    select
        adjusted.leg_id,
        adjusted.wf_account_id,
        adjusted.activity_type,
        adjusted.currency,
        adjusted.account_currency,
        adjusted.fx_rate,
        try_cast(
            case
                when adjusted.activity_type in ('BUY', 'SELL')
                    then case
                            when
                                not {{ product_fits(
                                'coalesce(adjusted.quantity, 0)',
                                'coalesce(adjusted.unit_price, 0)'
                            ) }}
                                then null
                            when adjusted.activity_type = 'BUY'
                                then -(
                                        coalesce(adjusted.quantity, 0)
                                        * coalesce(adjusted.unit_price, 0)
                                        + adjusted.fee
                                    )
                            else
                                coalesce(adjusted.quantity, 0)
                                * coalesce(adjusted.unit_price, 0)
                                - adjusted.fee
                        end
                when adjusted.activity_type in ('DEPOSIT', 'DIVIDEND', 'INTEREST', 'CREDIT')
                    then coalesce(adjusted.amount, 0) - adjusted.fee
                when adjusted.activity_type = 'WITHDRAWAL'
                    then -(coalesce(adjusted.amount, 0) + adjusted.fee)
                when adjusted.activity_type in ('FEE', 'TAX')
                    then -(
                            case
                                when adjusted.fee <> 0 then adjusted.fee
                                else coalesce(adjusted.amount, 0)
                            end
                        )
                when adjusted.activity_type = 'TRANSFER_IN' and adjusted.asset_key is null
                    then coalesce(adjusted.amount, 0) - adjusted.fee
                when adjusted.activity_type = 'TRANSFER_OUT' and adjusted.asset_key is null
                    then -(coalesce(adjusted.amount, 0) + adjusted.fee)
                when adjusted.activity_type in ('TRANSFER_IN', 'TRANSFER_OUT')
                    then -adjusted.fee
                else 0
            end
            as decimal(38, 20)
        ) as cash_delta
    from adjusted

),

-- A foreign BUY/SELL with an fxRate is the broker's conversion: the account currency.
booked as (

    select
        cash_effects.wf_account_id,
        case
            when
                cash_effects.activity_type in ('BUY', 'SELL')
                and cash_effects.account_currency is not null
                and cash_effects.currency <> cash_effects.account_currency
                and coalesce(cash_effects.fx_rate, 0) <> 0
                then cash_effects.account_currency
            else cash_effects.currency
        end as currency,
        case
            when
                cash_effects.activity_type in ('BUY', 'SELL')
                and cash_effects.account_currency is not null
                and cash_effects.currency <> cash_effects.account_currency
                and coalesce(cash_effects.fx_rate, 0) <> 0
                then cast(
                        cast(cash_effects.cash_delta as {{ decimal_type() }})
                        * cash_effects.fx_rate
                        as decimal(38, 20)
                    )
            else cash_effects.cash_delta
        end as cash_delta
    from cash_effects

),

final as (

    select
        booked.wf_account_id,
        booked.currency,
        case
            when count(*) = count(booked.cash_delta)
                then cast(sum(booked.cash_delta) as {{ decimal_type() }})
        end as wf_cash
    from booked
    where booked.currency is not null
    group by booked.wf_account_id, booked.currency

)

select * from final
