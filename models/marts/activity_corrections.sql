{#- One row per activity flexsync posted to Wealthfolio that IBKR has since taken back
    and that Wealthfolio still holds: a dividend (or payment in lieu) reversed after it
    was posted. The loader deletes it through Wealthfolio's API (only an activity whose
    idempotencyKey is the external id, i.e. posted by flexsync) and records the
    correction in the ledger (status 'deleted'), so a re-run does nothing. -#}
with

cash_transactions as (

    select * from {{ ref('int_ibkr__cash_transactions_classified') }}

),

ledger as (

    select * from {{ ref('stg_sync__posted_activities') }}

),

-- The Wealthfolio id each external id was posted as, and whether a correction ran.
ledger_state as (

    select
        ledger.external_id,
        max(ledger.wf_activity_id) filter (where ledger.is_in_wealthfolio) as wf_activity_id,
        bool_or(ledger.is_in_wealthfolio) as was_posted,
        bool_or(ledger.status = 'deleted') as was_deleted
    from ledger
    group by ledger.external_id

),

reversed_after_posting as (

    select
        cash_transactions.external_id,
        cash_transactions.broker_account_id,
        'ibkr:cash:' || cash_transactions.reversed_by_transaction_id as related_external_id,
        'IBKR reversed this dividend (ibkr:cash:'
        || cash_transactions.reversed_by_transaction_id || ') after it was posted'
            as reason
    from cash_transactions
    where
        cash_transactions.reversed_by_transaction_id is not null
        and cash_transactions.transaction_id_rank = 1

),

final as (

    select
        reversed_after_posting.external_id,
        {{ wf_account_id_for('reversed_after_posting.broker_account_id') }} as wf_account_id,
        reversed_after_posting.broker_account_id,
        ledger_state.wf_activity_id,
        'delete' as action,
        reversed_after_posting.reason,
        reversed_after_posting.related_external_id
    from reversed_after_posting
    inner join ledger_state
        on reversed_after_posting.external_id = ledger_state.external_id
    where ledger_state.was_posted and not ledger_state.was_deleted

)

select * from final
