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

{#- True when a * b of two DECIMAL(38, 10) cannot overflow (the scaled product must stay
    below 1.7e38, so each factor below 1e9): DuckDB raises (it does not return
    NULL) when a decimal product overflows, and one odd Flex row must never stop the
    whole build. Integer bounds keep the comparison DECIMAL, never DOUBLE. -#}
{% macro product_fits(a, b) -%}
    (abs({{ a }}) < 1000000000 and abs({{ b }}) < 1000000000)
{%- endmacro %}
