{#- Minor currency units. IBKR writes pence as 'GBX'; Wealthfolio writes 'GBp'.
    The marts carry major units only: GBX amounts become GBP (x 0.01, kept DECIMAL:
    DuckDB's decimal / integer would give a DOUBLE). Case matters: 'GBp' is pence. -#}

{% macro is_minor_unit_currency(currency) -%}
    ({{ currency }} in ('GBX', 'GBp'))
{%- endmacro %}

{% macro to_major_amount(amount, currency) -%}
    case
        when {{ is_minor_unit_currency(currency) }}
            then cast({{ amount }} * 0.01 as {{ decimal_type() }})
        else {{ amount }}
    end
{%- endmacro %}

{% macro to_major_currency(currency) -%}
    case
        when {{ is_minor_unit_currency(currency) }} then 'GBP'
        else {{ currency }}
    end
{%- endmacro %}

{#- Product of a list of DECIMALs, kept DECIMAL at every step (DuckDB's product()
    aggregate returns a DOUBLE). NULL for a NULL list. -#}
{% macro decimal_product(list_expression) -%}
    list_reduce(
        {{ list_expression }},
        lambda product, factor: cast(product * factor as {{ decimal_type() }})
    )
{%- endmacro %}
