{#- One row per Wealthfolio activity a mapped IBKR transfer becomes: the shares (asset
    transfer), the cash (a cash transfer, or cash moved with the shares). -#}
with

transfers as (

    select * from {{ ref('int_ibkr__transfers_classified') }}
    where disposition = 'mapped'

),

-- The shares of a share transfer, and the cash of a cash transfer or moved with shares.
legs as (

    select
        transfers.*,
        'shares' as leg
    from transfers
    where not transfers.is_cash_transfer

    union all

    select
        transfers.*,
        'cash' as leg
    from transfers
    where transfers.signed_cash <> 0

),

final as (

    select
        legs.external_id || case
            when legs.leg = 'cash' and not legs.is_cash_transfer then ':cash' else ''
        end as external_id,
        legs.broker_account_id,
        'transfer' as source,
        legs.transaction_id as source_id,
        legs.source_row_key,
        cast(null as varchar) as source_group_id,
        case
            when legs.leg = 'shares' then legs.activity_type
            when legs.signed_cash < 0 then 'TRANSFER_OUT'
            else 'TRANSFER_IN'
        end as activity_type,
        cast(null as varchar) as subtype,
        {{ activity_local_time('legs.transfer_moment', 'legs.transferred_at_has_time') }}
            as activity_at,
        cast(legs.transfer_moment as date) as activity_date,
        legs.transferred_at_zone as activity_at_zone,
        {{ activity_time_zone('legs.transferred_at_zone') }} as activity_time_zone,
        case when legs.leg = 'shares' then legs.canonical_symbol end as symbol,
        case when legs.leg = 'shares' then legs.exchange_mic end as exchange_mic,
        case when legs.leg = 'shares' then legs.quote_currency end as quote_currency,
        case when legs.leg = 'shares' then 'EQUITY' end as instrument_type,
        case when legs.leg = 'shares' then abs(legs.quantity) end as quantity,
        case
            when legs.leg = 'shares'
                then {{ to_major_amount('legs.activity_unit_price', 'legs.currency') }}
        end as unit_price,
        case
            when legs.leg = 'cash'
                then {{ to_major_amount('abs(legs.signed_cash)', 'legs.currency') }}
        end as amount,
        cast(0 as {{ decimal_type() }}) as fee,
        {{ to_major_currency('legs.currency') }} as currency,
        concat_ws(
            ' ', 'Transfer', legs.transfer_type, legs.direction, legs.counterparty_account,
            legs.description
        ) as description,
        legs.transfer_type as flex_type,
        lower(legs.direction) as direction,
        legs.asset_category,
        legs.conid,
        legs.isin,
        legs.extract_id
    from legs

)

select * from final
