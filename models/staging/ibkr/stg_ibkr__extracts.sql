{#- One row per landed Flex file or download. -#}
with

source as (

    select * from {{ source('ibkr', 'extracts') }}

),

renamed as (

    select
        ---------- ids
        extract_id,
        file_sha256,
        reference_code,
        query_id,

        ---------- strings
        source as source_name,
        sections,

        ---------- numerics
        statement_count,
        row_count,
        byte_size,

        ---------- timestamps
        fetched_at,
        landed_at

    from source

)

select * from renamed
