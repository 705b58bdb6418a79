{#- Run context for the marts. `--vars` wins when given; otherwise flexsync passes the
    values as environment variables (FLEXSYNC_RUN_ID, FLEXSYNC_RUN_AT, IBKR_ACCOUNT_ID),
    because a changed --vars value forces dbt to re-parse the whole project while a
    changed env var only re-parses the files that read it. A bare `dbt build` falls
    back to dbt's invocation_id / run_started_at. -#}

{% macro sql_string(value) -%}
    '{{ (value ~ "") | replace("'", "''") }}'
{%- endmacro %}

{% macro flexsync_run_id() -%}
    {%- set value = var('run_id', env_var('FLEXSYNC_RUN_ID', '')) -%}
    {{- return(value if value else invocation_id) -}}
{%- endmacro %}

{% macro flexsync_run_at() -%}
    {%- set value = var('run_at', env_var('FLEXSYNC_RUN_AT', '')) -%}
    {%- if not value -%}
        {%- set value = run_started_at.strftime('%Y-%m-%d %H:%M:%S.%f') -%}
    {%- endif -%}
    {{- return(value) -}}
{%- endmacro %}

{% macro flexsync_wf_account_id() -%}
    {{- return(var('wf_account_id', env_var('IBKR_ACCOUNT_ID', ''))) -}}
{%- endmacro %}
