{#- One row per landed FlexStatement: the account and the period it covers. -#}
with

source as (

    select * from {{ source('ibkr', 'statements') }}

),

renamed as (

    select
        ---------- ids
        extract_id,
        file_sha256,
        statement_index,
        {{ flex_text('account_id') }} as broker_account_id,

        ---------- strings
        {{ flex_text('period') }} as period,
        sections,

        ---------- booleans
        {# Statements landed before sections were recorded count as having positions. #}
        coalesce(
            list_contains(string_split(sections, ','), 'OpenPositions'), true
        ) as has_open_positions,

        ---------- dates and times
        {{ flex_date('from_date') }} as from_date,
        {{ flex_date('to_date') }} as to_date,
        {{ flex_datetime('when_generated') }} as generated_at,
        {{ flex_zone('when_generated') }} as generated_at_zone

    from source

)

select * from renamed
