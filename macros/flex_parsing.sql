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

{#- A Flex date or date-time reduced to 'date[ time]': the trailing zone (BST, AEST,
    EST, -0500) removed and the date/time separator (';', ',', ', ', ' ', 'T') made a
    space. -#}
{% macro _flex_datetime_normalised(expression) -%}
    regexp_replace(
        regexp_replace(
            trim({{ expression }}),
            '(\d)\s*(?:[A-Za-z]{2,5}|[+-]\d{2}:?\d{2})$',
            '\1'
        ),
        '(?:;\s*|,\s*|\s+|T)',
        ' ',
        'g'
    )
{%- endmacro %}

{#- A Flex date or date-time as TIMESTAMP: yyyyMMdd or yyyy-MM-dd, optionally with
    HHmmss / HH:mm:ss, local time as IBKR wrote it (the zone, if any, is flex_zone).
    'MULTI', '' and any other shape give NULL. -#}
{% macro flex_datetime(expression) -%}
    case
        when regexp_matches(
            {{ _flex_datetime_normalised(expression) }},
            '^\d{4}-?\d{2}-?\d{2}( \d{2}:?\d{2}:?\d{2})?$'
        )
            then try_strptime(
                {{ _flex_datetime_normalised(expression) }},
                [
                    '%Y%m%d %H%M%S', '%Y-%m-%d %H:%M:%S', '%Y%m%d %H:%M:%S',
                    '%Y-%m-%d %H%M%S', '%Y%m%d', '%Y-%m-%d'
                ]
            )
    end
{%- endmacro %}

{% macro flex_date(expression) -%}
    cast({{ flex_datetime(expression) }} as date)
{%- endmacro %}

{#- The trailing zone of a date-time (e.g. 'BST', 'AEST', '-0500'), else NULL. -#}
{% macro flex_zone(expression) -%}
    nullif(
        regexp_extract(
            trim({{ expression }}), '\d\s*([A-Za-z]{2,5}|[+-]\d{2}:?\d{2})$', 1
        ),
        ''
    )
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

{#- Identity of a raw Flex row across extracts: `base_key` (an id, else a digest of what
    the row says), plus '#n' for the n-th row of one statement with that base key.
    Overlapping windows land the same IBKR row again under the same key (the latest
    extract wins), but two rows of one statement are never merged: two identical
    "Other Fees -1.34" rows, or two rows whose ids collide, keep a key each. -#}
{% macro flex_row_key(base_key) -%}
    ({{ base_key }}) || case
        when row_number() over (
                partition by _extract_id, _statement_index, ({{ base_key }})
                order by _row_index
            ) > 1
            then '#' || row_number() over (
                    partition by _extract_id, _statement_index, ({{ base_key }})
                    order by _row_index
                )
        else ''
    end
{%- endmacro %}

{#- True when a Flex date-time carries a time of day (not a bare date). -#}
{% macro flex_has_time(expression) -%}
    coalesce(regexp_matches(
        {{ _flex_datetime_normalised(expression) }}, '^\S+ \d{2}:?\d{2}'
    ), false)
{%- endmacro %}
