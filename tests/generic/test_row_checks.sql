-- noqa: disable=LT02
-- (sqlfluff cannot lay out the Jinja that builds the check list)
{#- Many row-level checks of one model in one set-based query (one dbt node, one scan
    for the per-row checks instead of one node and one scan per check). Returns one
    row per failed check: `check_name` and how many rows (or duplicated keys) fail it.
    Each argument keeps the semantics of the per-column test it replaces:
      not_null: [column, ...]                  rows where the column is NULL
      unique: [column, ...]                    values occurring twice (NULLs ignored,
                                               as dbt's unique)
      unique_combination: [[column, ...] or {columns: [...], where: sql}, ...]
                                               combinations occurring twice (NULLs group)
      accepted_values: {column: [value, ...]}  values outside the list (NULL passes)
      non_negative: [column, ...]              negative values (NULL passes)
      wealthfolio_activity_type: [column, ...] values outside Wealthfolio's 14 types
                                               (NULL passes)
      expressions: [{expression: sql, where: sql}, ...]
                                               rows matching `where` (default: all) for
                                               which `expression` is not true -#}
{% test row_checks(
    model,
    not_null=[],
    unique=[],
    unique_combination=[],
    accepted_values={},
    non_negative=[],
    wealthfolio_activity_type=[],
    expressions=[]
) %}

{#- The checks as (label, failing-row SQL) pairs. -#}
{#- Wealthfolio v3's closed set of activity types (docs/upstream.md#activity-types):
    anything else fails the server's CHECK constraint. -#}
{%- set wealthfolio_activity_types = [
'BUY', 'SELL', 'SPLIT', 'DIVIDEND', 'INTEREST', 'DEPOSIT', 'WITHDRAWAL',
'TRANSFER_IN', 'TRANSFER_OUT', 'FEE', 'TAX', 'CREDIT', 'ADJUSTMENT', 'UNKNOWN'
] -%}
{%- set row_checks = [] -%}
{%- for column in not_null -%}
{%- do row_checks.append(('not_null: ' ~ column, column ~ ' is null')) -%}
{%- endfor -%}
{%- for column, values in accepted_values.items() -%}
{%- do row_checks.append((
'accepted_values: ' ~ column, column ~ " not in ('" ~ values | join("', '") ~ "')"
)) -%}
{%- endfor -%}
{%- for column in non_negative -%}
{%- do row_checks.append(('non_negative: ' ~ column, column ~ ' < 0')) -%}
{%- endfor -%}
{%- for column in wealthfolio_activity_type -%}
{%- do row_checks.append((
'wealthfolio_activity_type: ' ~ column,
column ~ " not in ('" ~ wealthfolio_activity_types | join("', '") ~ "')"
)) -%}
{%- endfor -%}
{%- for rule in expressions -%}
{%- do row_checks.append((
'expression: ' ~ rule.expression ~ (' where ' ~ rule.where if rule.where else ''),
'(' ~ rule.get('where', 'true') ~ ') and not coalesce((' ~ rule.expression ~ '), false)'
)) -%}
{%- endfor -%}
{%- set key_checks = [] -%}
{%- for column in unique -%}
{%- do key_checks.append(('unique: ' ~ column, [column], column ~ ' is not null')) -%}
{%- endfor -%}
{%- for item in unique_combination -%}
{%- set columns = item['columns'] if item is mapping else item -%}
{%- set where = item.get('where', 'true') if item is mapping else 'true' -%}
{%- do key_checks.append((
'unique_combination: ' ~ columns | join(', ')
~ (' where ' ~ where if where != 'true' else ''),
columns, where
)) -%}
{%- endfor %}

with

checks as (
    {%- if row_checks %}

    select unnest([
        {%- for label, failing in row_checks %}
        {
            check_name: '{{ label | replace("'", "''") }}',
            failures: count(*) filter (where {{ failing }})
        }{{ ',' if not loop.last }}
        {%- endfor %}
    ], recursive := true)
    from {{ model }}
    {%- endif %}
    {%- for label, columns, where in key_checks %}
    {%- if row_checks or not loop.first %}

    union all
    {%- endif %}

    select
        '{{ label | replace("'", "''") }}' as check_name,
        count(*) as failures
    from (
        select 1 as duplicated
        from {{ model }}
        where {{ where }}
        group by {{ columns | join(', ') }}
        having count(*) > 1
    )
    {%- endfor %}

)

select * from checks
where failures > 0

{% endtest %}
