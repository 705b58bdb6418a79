{#- Run context for the marts. `--vars` wins when given; otherwise flexsync passes the
    values as environment variables (FLEXSYNC_RUN_ID, FLEXSYNC_RUN_AT, IBKR_ACCOUNT_ID),
    because a changed --vars value forces dbt to re-parse the whole project while a
    changed env var only re-parses the files that read it. A bare `dbt build` falls
    back to dbt's invocation_id / run_started_at.
    Every env var here (and in account_routing.sql, activity_time.sql) is read only when a
    node executes (`execute`), never while parsing: dbt records an env var read at parse
    time against the file, so a value that differs from the image's baked parse (the run
    id and time every night, the account and zone of each deployment) would re-parse
    those files every run (≈1.5 s a night). -#}

{% macro sql_string(value) -%}
    '{{ (value ~ "") | replace("'", "''") }}'
{%- endmacro %}

{% macro flexsync_run_id() -%}
    {%- if not execute -%}{{- return('') -}}{%- endif -%}
    {%- set value = var('run_id', env_var('FLEXSYNC_RUN_ID', '')) -%}
    {{- return(value if value else invocation_id) -}}
{%- endmacro %}

{% macro flexsync_run_at() -%}
    {%- if not execute -%}{{- return('') -}}{%- endif -%}
    {%- set value = var('run_at', env_var('FLEXSYNC_RUN_AT', '')) -%}
    {%- if not value -%}
        {%- set value = run_started_at.strftime('%Y-%m-%d %H:%M:%S.%f') -%}
    {%- endif -%}
    {{- return(value) -}}
{%- endmacro %}

{% macro flexsync_wf_account_id() -%}
    {%- if not execute -%}{{- return('') -}}{%- endif -%}  {#- see run_context.sql -#}
    {{- return(var('wf_account_id', env_var('IBKR_ACCOUNT_ID', ''))) -}}
{%- endmacro %}
