{#- One row per Wealthfolio activity a mapped IBKR trade becomes (a leg):
      stock / ETF / fund   -> BUY or SELL whose cash effect is IBKR's netCash (the fee
                              carries commission and taxes), plus a FEE (or a CREDIT
                              for a rebate) when the commission is charged in another
                              currency;
      FX conversion (CASH) -> TRANSFER_OUT of the currency sold and TRANSFER_IN of the
                              currency bought, sharing a sourceGroupId (Wealthfolio's
                              contribution-neutral conversion), plus a FEE for the
                              commission.
    Never an fxRate: IBKR keeps cash per currency, and so does Wealthfolio without one. -#}
with

trades as (

    select * from {{ ref('int_ibkr__trades_classified') }}
    where disposition = 'mapped'

),

security_trades as (

    select
        trades.*,
        coalesce(trades.trade_date, cast(trades.traded_at as date)) as leg_date
    from trades
    where not trades.is_fx_conversion

),

fx_conversions as (

    select * from trades
    where trades.is_fx_conversion

),

-- The currency bought and the currency sold of a conversion, each a cash transfer.
fx_legs as (

    select
        fx_conversions.*,
        fx_conversions.fx_base_currency as leg_currency,
        fx_conversions.quantity as leg_amount
    from fx_conversions

    union all

    select
        fx_conversions.*,
        fx_conversions.activity_currency as leg_currency,
        fx_conversions.trade_proceeds + fx_conversions.trade_taxes as leg_amount
    from fx_conversions

),

security_activities as (

    select
        security_trades.external_id,
        security_trades.broker_account_id,
        'trade' as source,
        security_trades.trade_id as source_id,
        'trade:' || security_trades.trade_row_key as source_row_key,
        cast(null as varchar) as source_group_id,
        security_trades.activity_type,
        cast(null as varchar) as subtype,
        security_trades.traded_at as activity_at,
        security_trades.traded_at_has_time as activity_has_time,
        security_trades.leg_date as activity_date,
        security_trades.traded_at_zone as activity_at_zone,
        security_trades.canonical_symbol as symbol,
        security_trades.exchange_mic,
        security_trades.quote_currency,
        {{ wealthfolio_instrument_type('security_trades.asset_category') }} as instrument_type,
        security_trades.activity_quantity as quantity,
        security_trades.activity_unit_price as unit_price,
        security_trades.activity_amount as amount,
        security_trades.activity_fee as fee,
        security_trades.activity_currency as currency,
        security_trades.description,
        security_trades.buy_sell as flex_type,
        cast(null as varchar) as direction,
        security_trades.asset_category,
        security_trades.conid,
        security_trades.isin,
        security_trades.extract_id
    from security_trades

),

-- A commission charged in another currency than the trade's (and every FX
-- conversion's commission): its own FEE, or a CREDIT/REBATE when IBKR paid it back.
commission_activities as (

    select
        case
            when trades.is_fx_conversion then 'ibkr:fx:' || trades.trade_id || ':fee'
            else trades.external_id || ':commission'
        end as external_id,
        trades.broker_account_id,
        'trade' as source,
        trades.trade_id as source_id,
        'trade:' || trades.trade_row_key as source_row_key,
        case when trades.is_fx_conversion then 'ibkr:fx:' || trades.trade_id end
            as source_group_id,
        case when trades.commission_amount < 0 then 'FEE' else 'CREDIT' end as activity_type,
        case when trades.commission_amount > 0 then 'REBATE' end as subtype,
        trades.traded_at as activity_at,
        trades.traded_at_has_time as activity_has_time,
        coalesce(trades.trade_date, cast(trades.traded_at as date)) as activity_date,
        trades.traded_at_zone as activity_at_zone,
        cast(null as varchar) as symbol,
        cast(null as varchar) as exchange_mic,
        cast(null as varchar) as quote_currency,
        cast(null as varchar) as instrument_type,
        cast(null as {{ decimal_type() }}) as quantity,
        cast(null as {{ decimal_type() }}) as unit_price,
        abs(trades.commission_amount) as amount,
        cast(0 as {{ decimal_type() }}) as fee,
        trades.commission_currency_major as currency,
        'Commission of ' || coalesce(trades.symbol, 'trade') || ' (trade ' || trades.trade_id
        || ')' as description,
        trades.buy_sell as flex_type,
        cast(null as varchar) as direction,
        trades.asset_category,
        trades.conid,
        trades.isin,
        trades.extract_id
    from trades
    where
        trades.commission_amount <> 0
        and (trades.is_fx_conversion or not trades.is_commission_in_trade_currency)

),

fx_activities as (

    select
        'ibkr:fx:' || fx_legs.trade_id || ':'
        || case when fx_legs.leg_amount < 0 then 'out' else 'in' end as external_id,
        fx_legs.broker_account_id,
        'trade' as source,
        fx_legs.trade_id as source_id,
        'trade:' || fx_legs.trade_row_key as source_row_key,
        'ibkr:fx:' || fx_legs.trade_id as source_group_id,
        case when fx_legs.leg_amount < 0 then 'TRANSFER_OUT' else 'TRANSFER_IN' end
            as activity_type,
        cast(null as varchar) as subtype,
        fx_legs.traded_at as activity_at,
        fx_legs.traded_at_has_time as activity_has_time,
        coalesce(fx_legs.trade_date, cast(fx_legs.traded_at as date)) as activity_date,
        fx_legs.traded_at_zone as activity_at_zone,
        cast(null as varchar) as symbol,
        cast(null as varchar) as exchange_mic,
        cast(null as varchar) as quote_currency,
        cast(null as varchar) as instrument_type,
        cast(null as {{ decimal_type() }}) as quantity,
        cast(null as {{ decimal_type() }}) as unit_price,
        abs(fx_legs.leg_amount) as amount,
        cast(0 as {{ decimal_type() }}) as fee,
        fx_legs.leg_currency as currency,
        'FX ' || fx_legs.symbol || ' ' || fx_legs.buy_sell || ' '
        || {{ decimal_text('abs(fx_legs.quantity)') }} || ' @ '
        || coalesce({{ decimal_text('fx_legs.trade_price') }}, '?')
        || case when fx_legs.notes like '%AFx%' then ' (automatic conversion)' else '' end
            as description,
        fx_legs.buy_sell as flex_type,
        case when fx_legs.leg_amount < 0 then 'out' else 'in' end as direction,
        fx_legs.asset_category,
        fx_legs.conid,
        fx_legs.isin,
        fx_legs.extract_id
    from fx_legs
    where fx_legs.leg_amount <> 0

),

unioned as (

    select * from security_activities
    union all
    select * from commission_activities
    union all
    select * from fx_activities

),

final as (

    select
        unioned.* exclude (activity_at, activity_has_time, activity_at_zone),
        {{ activity_local_time('unioned.activity_at', 'unioned.activity_has_time') }}
            as activity_at,
        unioned.activity_at_zone,
        {{ activity_time_zone('unioned.activity_at_zone') }} as activity_time_zone
    from unioned

)

select * from final
