{#- One row per skipped IBKR source row (and per currency its cash moved in), with the
    reason it was not posted: unsupported asset categories, cash (type, direction)
    pairs without a seed row (871(m) refunds, Broker Fees ...), dividend reversals and
    the dividends they net with, cancelled trades, corporate actions to review, zero
    amounts, rows without an id. `amount` is the cash IBKR moved for the row (signed,
    major units): with the mapped activities it adds up to IBKR's cash per currency
    (tests/assert_cash_is_conserved.sql). Logged at WARNING each run. -#}
with

trades as (

    select * from {{ ref('int_ibkr__trades_classified') }}
    where disposition = 'unmapped'

),

cash_transactions as (

    select * from {{ ref('int_ibkr__cash_transactions_classified') }}
    where disposition = 'unmapped'

),

corporate_actions as (

    select * from {{ ref('int_ibkr__corporate_actions_classified') }}
    where disposition = 'unmapped'

),

transfers as (

    select * from {{ ref('int_ibkr__transfers_classified') }}
    where disposition = 'unmapped'

),

transaction_taxes as (

    select * from {{ ref('int_ibkr__transaction_taxes_classified') }}
    where disposition = 'unmapped'

),

-- The cash an unmapped trade moved, per currency: the trade currency (netCash without a
-- commission charged elsewhere), the commission's currency, and an FX conversion's
-- base currency.
trade_cash_legs as (

    select
        trades.*,
        1 as leg_rank,
        trades.activity_currency as leg_currency,
        case
            when trades.is_fx_conversion
                then coalesce(trades.trade_proceeds, 0) + trades.trade_taxes
            else trades.trade_net_cash
        end as leg_amount
    from trades

    union all

    select
        trades.*,
        2 as leg_rank,
        trades.commission_currency_major as leg_currency,
        trades.commission_amount as leg_amount
    from trades
    where
        trades.commission_amount <> 0
        and (trades.is_fx_conversion or not trades.is_commission_in_trade_currency)

    union all

    select
        trades.*,
        3 as leg_rank,
        trades.fx_base_currency as leg_currency,
        trades.quantity as leg_amount
    from trades
    where trades.is_fx_conversion and trades.fx_base_currency is not null

),

unmapped_trades as (

    select
        'trade' as source,
        trade_cash_legs.trade_id as source_id,
        'trade:' || trade_cash_legs.trade_row_key as source_row_key,
        trade_cash_legs.broker_account_id,
        trade_cash_legs.buy_sell as flex_type,
        trade_cash_legs.transaction_type,
        trade_cash_legs.asset_category,
        coalesce(trade_cash_legs.canonical_symbol, trade_cash_legs.symbol) as symbol,
        trade_cash_legs.leg_amount as amount,
        trade_cash_legs.leg_currency as currency,
        coalesce(trade_cash_legs.trade_date, cast(trade_cash_legs.traded_at as date))
            as activity_date,
        trade_cash_legs.description,
        trade_cash_legs.unmapped_reason
        || case
            when trade_cash_legs.leg_rank = 2 then ' (its commission)'
            when trade_cash_legs.leg_rank = 3 then ' (the currency bought or sold)'
            else ''
        end as reason,
        case
            when trade_cash_legs.cancellation_outcome = 'review'
                then 'ibkr:trade:' || trade_cash_legs.cancelled_trade_id
        end as related_external_id,
        trade_cash_legs.extract_id
    from trade_cash_legs

),

unmapped_cash as (

    select
        'cash' as source,
        cash_transactions.transaction_id as source_id,
        'cash:' || cash_transactions.cash_row_key as source_row_key,
        cash_transactions.broker_account_id,
        cash_transactions.flex_type,
        cast(null as varchar) as transaction_type,
        cash_transactions.asset_category,
        coalesce(cash_transactions.canonical_symbol, cash_transactions.symbol) as symbol,
        cash_transactions.signed_amount as amount,
        cash_transactions.activity_currency as currency,
        cash_transactions.activity_date,
        cash_transactions.description,
        cash_transactions.unmapped_reason as reason,
        case
            when cash_transactions.reverses_transaction_id is not null
                then 'ibkr:cash:' || cash_transactions.reverses_transaction_id
            when cash_transactions.reversed_by_transaction_id is not null
                then 'ibkr:cash:' || cash_transactions.reversed_by_transaction_id
        end as related_external_id,
        cash_transactions.extract_id
    from cash_transactions

),

unmapped_corporate_actions as (

    select
        'corporate_action' as source,
        coalesce(corporate_actions.transaction_id, corporate_actions.action_id) as source_id,
        corporate_actions.source_row_key,
        corporate_actions.broker_account_id,
        corporate_actions.resolved_action_type as flex_type,
        corporate_actions.action_type as transaction_type,
        corporate_actions.asset_category,
        coalesce(corporate_actions.line_symbol, corporate_actions.symbol) as symbol,
        {{ to_major_amount('corporate_actions.cash_proceeds', 'corporate_actions.currency') }}
            as amount,
        {{ to_major_currency('corporate_actions.currency') }} as currency,
        cast(corporate_actions.action_moment as date) as activity_date,
        corporate_actions.description,
        corporate_actions.unmapped_reason as reason,
        cast(null as varchar) as related_external_id,
        corporate_actions.extract_id
    from corporate_actions

),

unmapped_transfers as (

    select
        'transfer' as source,
        transfers.transaction_id as source_id,
        transfers.source_row_key,
        transfers.broker_account_id,
        transfers.transfer_type as flex_type,
        transfers.direction as transaction_type,
        transfers.asset_category,
        coalesce(transfers.canonical_symbol, transfers.symbol) as symbol,
        {{ to_major_amount('transfers.signed_cash', 'transfers.currency') }} as amount,
        {{ to_major_currency('transfers.currency') }} as currency,
        cast(transfers.transfer_moment as date) as activity_date,
        transfers.description,
        transfers.unmapped_reason as reason,
        cast(null as varchar) as related_external_id,
        transfers.extract_id
    from transfers

),

unmapped_transaction_taxes as (

    select
        'transaction_tax' as source,
        transaction_taxes.trade_id as source_id,
        transaction_taxes.source_row_key,
        transaction_taxes.broker_account_id,
        transaction_taxes.tax_description as flex_type,
        cast(null as varchar) as transaction_type,
        transaction_taxes.asset_category,
        transaction_taxes.symbol,
        {{ to_major_amount('transaction_taxes.tax_amount', 'transaction_taxes.currency') }}
            as amount,
        {{ to_major_currency('transaction_taxes.currency') }} as currency,
        cast(transaction_taxes.taxed_moment as date) as activity_date,
        transaction_taxes.description,
        transaction_taxes.unmapped_reason as reason,
        transaction_taxes.trade_external_id as related_external_id,
        transaction_taxes.extract_id
    from transaction_taxes

),

final as (

    select * from unmapped_trades
    union all
    select * from unmapped_cash
    union all
    select * from unmapped_corporate_actions
    union all
    select * from unmapped_transfers
    union all
    select * from unmapped_transaction_taxes

)

select * from final
