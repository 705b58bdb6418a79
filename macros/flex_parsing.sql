{#- Typing raw Flex attributes. Every raw column is VARCHAR exactly as IBKR wrote it;
    '' means absent. Nothing here raises on bad input: an unparseable value becomes
    NULL and the models turn a NULL that matters into an unmapped reason. -#}

{% macro flex_text(expression) -%}
    nullif(trim({{ expression }}), '')
{%- endmacro %}

{#- An IBKR id ('0' means "none" in orig* attributes). -#}
{% macro flex_id(expression) -%}
    nullif(nullif(trim({{ expression }}), ''), '0')
{%- endmacro %}

{% macro decimal_type() -%}
    decimal(38, 10)
{%- endmacro %}

{#- Quantities and money: thousands separators stripped, never a float. -#}
{% macro flex_decimal(expression) -%}
    try_cast(
        nullif(replace(trim({{ expression }}), ',', ''), '') as {{ decimal_type() }}
    )
{%- endmacro %}

{#- yyyyMMdd or yyyy-MM-dd, optionally followed by ';', ',', ', ', ' ' or 'T' and
    HHmmss / HH:mm:ss, optionally followed by a zone (BST, AEST, EST, -0500). -#}
{% macro _flex_datetime_parts(expression) -%}
    regexp_extract(
        trim({{ expression }}),
        '^(\d{4})-?(\d{2})-?(\d{2})(?:(?:;|,\s*|\s+|T)(\d{2}):?(\d{2}):?(\d{2}))?\s*([A-Za-z]{2,5}|[+-]\d{2}:?\d{2})?$',
        ['y', 'mo', 'd', 'h', 'mi', 's', 'zone']
    )
{%- endmacro %}

{#- A Flex date or date-time as TIMESTAMP (local time as IBKR wrote it; the zone, if
    any, is in flex_zone). 'MULTI' and any other shape give NULL. -#}
{% macro flex_datetime(expression) -%}
    try_cast(
        nullif(
            {{ _flex_datetime_parts(expression) }}.y || '-'
            || {{ _flex_datetime_parts(expression) }}.mo || '-'
            || {{ _flex_datetime_parts(expression) }}.d,
            '--'
        ) || ' ' || coalesce(
            nullif(
                {{ _flex_datetime_parts(expression) }}.h || ':'
                || {{ _flex_datetime_parts(expression) }}.mi || ':'
                || {{ _flex_datetime_parts(expression) }}.s,
                '::'
            ),
            '00:00:00'
        ) as timestamp
    )
{%- endmacro %}

{% macro flex_date(expression) -%}
    cast({{ flex_datetime(expression) }} as date)
{%- endmacro %}

{#- The trailing zone of a date-time (e.g. 'BST', 'AEST', '-0500'), else NULL. -#}
{% macro flex_zone(expression) -%}
    nullif({{ _flex_datetime_parts(expression) }}.zone, '')
{%- endmacro %}

{#- A Flex time of day: HHmmss or HH:mm:ss, optionally with a zone. -#}
{% macro flex_time(expression) -%}
    try_cast(
        nullif(
            regexp_replace(
                trim({{ expression }}),
                '^(\d{2}):?(\d{2}):?(\d{2})\s*(?:[A-Za-z]{2,5}|[+-]\d{2}:?\d{2})?$',
                '\1:\2:\3'
            ),
            ''
        ) as time
    )
{%- endmacro %}

{% macro flex_time_zone(expression) -%}
    nullif(
        regexp_extract(
            trim({{ expression }}),
            '^\d{2}:?\d{2}:?\d{2}\s*([A-Za-z]{2,5}|[+-]\d{2}:?\d{2})$',
            1
        ),
        ''
    )
{%- endmacro %}
