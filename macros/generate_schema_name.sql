{#- Models land in exactly the schema their folder configures (`staging`, `intermediate`,
    `marts`, seeds in `seeds`), not dbt's default `<target schema>_<custom>`. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
