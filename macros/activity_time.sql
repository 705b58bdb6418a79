{#- When an activity happened, as Wealthfolio needs it (it places an activity on a day
    in the *user's* timezone, so a wall-clock time labelled UTC can move to another day).
    IBKR writes local times; the statement's zone is the time's suffix when it has one
    (BST, AEST, -0500), else the IBKR_TIMEZONE setting (default Europe/London).
    The marts carry the local time and the zone; the loader sends RFC 3339 with the
    zone's offset. A date-only movement is placed at local noon, so its day holds for
    every user from UTC-11 to UTC+11. -#}

{% macro flexsync_timezone() -%}
    {%- if not execute -%}{{- return('Europe/London') -}}{%- endif -%}  {#- see run_context.sql -#}
    {{- return(var('ibkr_timezone', env_var('IBKR_TIMEZONE', '') or 'Europe/London')) -}}
{%- endmacro %}

{#- The zone an activity's local time is in: '+HH:MM' for a numeric or known
    abbreviated suffix, the IANA name of IBKR_TIMEZONE when there is no suffix, NULL for
    an abbreviation seeds/time_zone_abbreviations.csv does not know (never guessed). -#}
{% macro activity_time_zone(zone) -%}
    case
        when {{ zone }} is null then {{ sql_string(flexsync_timezone()) }}
        when regexp_matches({{ zone }}, '^[+-]\d{2}:?\d{2}$')
            then regexp_replace({{ zone }}, '^([+-]\d{2}):?(\d{2})$', '\1:\2')
        else (
            select nullif(zones.utc_offset, '')
            from {{ ref('time_zone_abbreviations') }} as zones
            where zones.abbreviation = upper({{ zone }})
        )
    end
{%- endmacro %}

{#- Local time of the activity: the time IBKR wrote, or noon of a date-only row. -#}
{% macro activity_local_time(moment, has_time) -%}
    case
        when {{ has_time }} then {{ moment }}
        else cast(cast({{ moment }} as date) as timestamp) + interval 12 hour
    end
{%- endmacro %}
