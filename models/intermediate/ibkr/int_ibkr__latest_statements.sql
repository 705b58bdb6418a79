{#- One row per IBKR account: its latest landed statement that carries an
    OpenPositions section (latest period end, then latest generation, then latest
    landing). Broker positions come from it; a statement without the section says
    nothing about positions, so it must not make every holding look like drift. -#}
with

statements as (

    select * from {{ ref('stg_ibkr__statements') }}

),

extracts as (

    select * from {{ ref('stg_ibkr__extracts') }}

),

joined as (

    select
        statements.*,
        extracts.landed_at
    from statements
    inner join extracts
        on statements.extract_id = extracts.extract_id
    where
        statements.broker_account_id is not null
        and coalesce(statements.has_open_positions, true)

),

final as (

    select *
    from joined
    qualify row_number() over (
            partition by joined.broker_account_id
            order by
                joined.to_date desc nulls last,
                joined.generated_at desc nulls last,
                joined.landed_at desc,
                joined.statement_index desc
        ) = 1

)

select * from final
