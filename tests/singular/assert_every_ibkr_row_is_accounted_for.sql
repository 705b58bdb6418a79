{#- Conservation of rows: every IBKR row that moves money or shares — Trades
    (EXECUTION), CashTransactions (DETAIL), CorporateActions (DETAIL), Transfers, and
    TransactionTaxes not already in their trade's fee — ends in exactly one of
    marts.fct_activities (as one or more activities) and marts.unmapped_transactions
    (with a reason). Nothing lost, nothing both posted and listed, nothing invented.
    Returns the offending rows. -#}
with

staged as (

    select
        broker_account_id,
        'trade:' || trade_row_key as source_row_key
    from {{ ref('stg_ibkr__trades') }}
    union all
    select
        broker_account_id,
        'cash:' || cash_row_key as source_row_key
    from {{ ref('stg_ibkr__cash_transactions') }}
    union all
    select
        broker_account_id,
        'corporate_action:' || corporate_action_row_key as source_row_key
    from {{ ref('stg_ibkr__corporate_actions') }}
    union all
    select
        broker_account_id,
        'transfer:' || transfer_row_key as source_row_key
    from {{ ref('stg_ibkr__transfers') }}
    union all
    select
        broker_account_id,
        source_row_key
    from {{ ref('int_ibkr__transaction_taxes_classified') }}
    where disposition <> 'in_trade_fee'

),

mapped as (

    select distinct
        broker_account_id,
        source_row_key
    from {{ ref('fct_activities') }}

),

unmapped as (

    select distinct
        broker_account_id,
        source_row_key
    from {{ ref('unmapped_transactions') }}

),

final as (

    select
        coalesce(staged.broker_account_id, mapped.broker_account_id, unmapped.broker_account_id)
            as broker_account_id,
        coalesce(staged.source_row_key, mapped.source_row_key, unmapped.source_row_key)
            as source_row_key,
        case
            when staged.source_row_key is null then 'in a mart but not an IBKR row'
            when mapped.source_row_key is null and unmapped.source_row_key is null
                then 'lost: neither mapped nor listed'
            when mapped.source_row_key is not null and unmapped.source_row_key is not null
                then 'both mapped and listed as unmapped'
        end as problem
    from staged
    full outer join mapped
        on
            staged.broker_account_id = mapped.broker_account_id
            and staged.source_row_key = mapped.source_row_key
    full outer join unmapped
        on
            coalesce(staged.broker_account_id, mapped.broker_account_id)
            = unmapped.broker_account_id
            and coalesce(staged.source_row_key, mapped.source_row_key)
            = unmapped.source_row_key

)

select * from final
where problem is not null
