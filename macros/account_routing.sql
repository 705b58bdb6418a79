{#- Which Wealthfolio account receives which IBKR account's rows (issue 14): the one-account
    form IBKR_ACCOUNT_ID, or IBKR_ACCOUNT_MAP for several IBKR accounts. -#}

{#- IBKR_ACCOUNT_MAP (`U1111111=<uuid>,U2222222=<uuid>`, or --vars account_map) as a list
    of [IBKR account, Wealthfolio account] pairs; empty in the one-account form
    (IBKR_ACCOUNT_ID). flexsync validates the text before dbt runs. -#}
{% macro flexsync_account_map() -%}
    {%- if not execute -%}{{- return([]) -}}{%- endif -%}  {#- see run_context.sql -#}
    {%- set text = var('account_map', env_var('IBKR_ACCOUNT_MAP', '')) -%}
    {%- set pairs = [] -%}
    {%- for item in (text ~ '').split(',') if '=' in item -%}
        {%- set parts = item.split('=', 1) -%}
        {%- set _ = pairs.append([parts[0].strip(), parts[1].strip()]) -%}
    {%- endfor -%}
    {{- return(pairs) -}}
{%- endmacro %}

{#- The one place that says which Wealthfolio account receives an IBKR account's rows:
    its IBKR_ACCOUNT_MAP entry (NULL for an unmapped account), else IBKR_ACCOUNT_ID
    for every account (NULL when unset). -#}
{% macro wf_account_id_for(broker_account_id) -%}
    {%- set whens = [] -%}
    {%- for pair in flexsync_account_map() -%}
        {%- set _ = whens.append(
            'when ' ~ sql_string(pair[0]) ~ ' then ' ~ sql_string(pair[1])) -%}
    {%- endfor -%}
    {%- if whens -%}
        {{- return('case ' ~ broker_account_id ~ ' ' ~ whens | join(' ') ~ ' end') -}}
    {%- endif -%}
    {{- return("nullif(" ~ sql_string(flexsync_wf_account_id()) ~ ", '')") -}}
{%- endmacro %}

{#- The Wealthfolio accounts this configuration feeds (empty: none configured, so the
    Wealthfolio side is read from whatever account was snapshot). -#}
{% macro flexsync_wf_account_ids() -%}
    {%- set ids = [] -%}
    {%- for pair in flexsync_account_map() -%}
        {%- set _ = ids.append(pair[1]) -%}
    {%- endfor -%}
    {%- if not ids and flexsync_wf_account_id() -%}
        {%- set _ = ids.append(flexsync_wf_account_id()) -%}
    {%- endif -%}
    {{- return(ids) -}}
{%- endmacro %}

{#- True for a Wealthfolio account id this configuration feeds (always true when none is
    configured, so a bare `dbt build` still reads the snapshot it has). -#}
{% macro is_configured_wf_account(wf_account_id) -%}
    {%- set quoted = [] -%}
    {%- for id in flexsync_wf_account_ids() -%}
        {%- set _ = quoted.append(sql_string(id)) -%}
    {%- endfor -%}
    {%- if quoted -%}
        {{- return(wf_account_id ~ ' in (' ~ quoted | join(', ') ~ ')') -}}
    {%- endif -%}
    {{- return('true') -}}
{%- endmacro %}

{#- The key a Wealthfolio row is compared under: its account in the several-account form,
    the configured account (or NULL) in the one-account form, where everything the
    snapshot holds counts as that account. -#}
{% macro wf_account_key(wf_account_id) -%}
    {%- if flexsync_account_map() -%}
        {{- return(wf_account_id) -}}
    {%- endif -%}
    {{- return("nullif(" ~ sql_string(flexsync_wf_account_id()) ~ ", '')") -}}
{%- endmacro %}
