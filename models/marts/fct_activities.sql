{#- One row per mapped external id, ever: every Wealthfolio activity an IBKR trade, FX
    conversion, cash movement, corporate action, transfer or transaction tax becomes.
    Amounts are positive (the type carries the sign), money in major units (GBX -> GBP),
    quantities and money DECIMAL. activity_at is IBKR's local time, activity_time_zone
    the zone it is in (an offset or an IANA name); the loader sends both as RFC 3339.
    source_row_key names the IBKR row each activity comes from (several legs may share
    one); source_group_id ties the legs Wealthfolio should see as one movement. -#}
with

trade_activities as (

    select * from {{ ref('int_ibkr__trade_activities') }}

),

cash_transactions as (

    select * from {{ ref('int_ibkr__cash_transactions_classified') }}
    where disposition = 'mapped'

),

corporate_action_activities as (

    select * from {{ ref('int_ibkr__corporate_action_activities') }}

),

transfer_activities as (

    select * from {{ ref('int_ibkr__transfer_activities') }}

),

transaction_taxes as (

    select * from {{ ref('int_ibkr__transaction_taxes_classified') }}
    where disposition = 'mapped'

),

cash_activities as (

    select
        cash_transactions.external_id,
        cash_transactions.broker_account_id,
        'cash' as source,
        cash_transactions.transaction_id as source_id,
        'cash:' || cash_transactions.cash_row_key as source_row_key,
        cast(null as varchar) as source_group_id,
        cash_transactions.activity_type,
        cash_transactions.activity_subtype as subtype,
        {{ activity_local_time(
            'cash_transactions.cash_moved_at', 'cash_transactions.cash_moved_at_has_time'
        ) }} as activity_at,
        cash_transactions.activity_date,
        cash_transactions.transacted_at_zone as activity_at_zone,
        {{ activity_time_zone('cash_transactions.transacted_at_zone') }} as activity_time_zone,
        cash_transactions.activity_symbol as symbol,
        case
            when cash_transactions.activity_symbol is not null
                then cash_transactions.exchange_mic
        end as exchange_mic,
        case
            when cash_transactions.activity_symbol is not null
                then cash_transactions.quote_currency
        end as quote_currency,
        case
            when cash_transactions.activity_symbol is not null then 'EQUITY'
        end as instrument_type,
        cast(null as {{ decimal_type() }}) as quantity,
        cast(null as {{ decimal_type() }}) as unit_price,
        cash_transactions.activity_amount as amount,
        cast(0 as {{ decimal_type() }}) as fee,
        cash_transactions.activity_currency as currency,
        cash_transactions.description,
        cash_transactions.flex_type,
        cash_transactions.direction,
        cash_transactions.asset_category,
        cash_transactions.conid,
        cash_transactions.isin,
        cash_transactions.extract_id
    from cash_transactions

),

transaction_tax_activities as (

    select
        transaction_taxes.external_id,
        transaction_taxes.broker_account_id,
        'transaction_tax' as source,
        transaction_taxes.trade_id as source_id,
        transaction_taxes.source_row_key,
        cast(null as varchar) as source_group_id,
        case when transaction_taxes.tax_amount < 0 then 'TAX' else 'CREDIT' end
            as activity_type,
        case when transaction_taxes.tax_amount > 0 then 'REFUND' end as subtype,
        {{ activity_local_time(
            'transaction_taxes.taxed_moment', 'transaction_taxes.taxed_at_has_time'
        ) }} as activity_at,
        cast(transaction_taxes.taxed_moment as date) as activity_date,
        transaction_taxes.taxed_at_zone as activity_at_zone,
        {{ activity_time_zone('transaction_taxes.taxed_at_zone') }} as activity_time_zone,
        cast(null as varchar) as symbol,
        cast(null as varchar) as exchange_mic,
        cast(null as varchar) as quote_currency,
        cast(null as varchar) as instrument_type,
        cast(null as {{ decimal_type() }}) as quantity,
        cast(null as {{ decimal_type() }}) as unit_price,
        {{ to_major_amount('abs(transaction_taxes.tax_amount)', 'transaction_taxes.currency') }}
            as amount,
        cast(0 as {{ decimal_type() }}) as fee,
        {{ to_major_currency('transaction_taxes.currency') }} as currency,
        concat_ws(
            ' ', transaction_taxes.tax_description, transaction_taxes.symbol,
            '(trade ' || transaction_taxes.trade_id || ')'
        ) as description,
        transaction_taxes.tax_description as flex_type,
        'out' as direction,
        transaction_taxes.asset_category,
        transaction_taxes.conid,
        cast(null as varchar) as isin,
        transaction_taxes.extract_id
    from transaction_taxes

),

unioned as (

    select * from trade_activities
    union all by name
    select * from cash_activities
    union all by name
    select * from corporate_action_activities
    union all by name
    select * from transfer_activities
    union all by name
    select * from transaction_tax_activities

),

final as (

    select
        ---------- ids
        unioned.external_id,
        {{ wf_account_id_for('unioned.broker_account_id') }} as wf_account_id,
        unioned.broker_account_id,
        unioned.source,
        unioned.source_id,
        unioned.source_row_key,
        unioned.source_group_id,

        ---------- strings
        unioned.activity_type,
        unioned.subtype,
        unioned.symbol,
        {{ bare_ticker('unioned.symbol', 'unioned.exchange_mic') }} as ticker,
        unioned.exchange_mic,
        unioned.quote_currency,
        unioned.instrument_type,
        unioned.currency,
        unioned.description,
        unioned.flex_type,
        unioned.direction,
        unioned.asset_category,
        unioned.conid,
        unioned.isin,

        ---------- numerics
        cast(unioned.quantity as {{ decimal_type() }}) as quantity,
        cast(unioned.unit_price as {{ decimal_type() }}) as unit_price,
        cast(unioned.amount as {{ decimal_type() }}) as amount,
        cast(unioned.fee as {{ decimal_type() }}) as fee,

        ---------- dates and timestamps (local time as IBKR wrote it, and its zone)
        unioned.activity_date,
        unioned.activity_at,
        unioned.activity_at_zone,
        unioned.activity_time_zone,

        ---------- lineage
        unioned.extract_id
    from unioned

)

select * from final
