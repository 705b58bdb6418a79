{#- Incremental staging of raw Flex rows. Overlapping nightly windows land every IBKR
    row again and again (a 90-day window lands each trade ~90 times), so a staging model
    that re-read all of raw_ibkr would grow slower every night. An incremental build
    reads only the rows landed since the newest extract the model already holds (that
    extract again too: `>=` keeps rows landed in the same instant), deduplicates them
    and replaces the rows with the same key (delete+insert). The newest landing wins,
    exactly as a full rebuild decides. flexsync.transform rebuilds these models from
    scratch when their SQL (or a macro they use) changes, and on --full-refresh. -#}

{% macro landed_since_last_build(extracted_at_column='_extracted_at') -%}
    {%- if is_incremental() -%}
        {{ extracted_at_column }} >= (
            select coalesce(max(built.extracted_at), timestamp '1900-01-01')
            from {{ this }} as built
        )
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}
