{#- Minor currency units. IBKR writes pence as 'GBX'; Wealthfolio writes 'GBp'.
    The marts carry major units only: GBX amounts become GBP (x 0.01, kept DECIMAL:
    DuckDB's decimal / integer would give a DOUBLE). Case matters: 'GBp' is pence. -#}

{% macro is_minor_unit_currency(currency) -%}
    ({{ currency }} in ('GBX', 'GBp'))
{%- endmacro %}

{% macro to_major_amount(amount, currency) -%}
    case
        when {{ is_minor_unit_currency(currency) }}
            then cast(({{ amount }}) * 0.01 as {{ decimal_type() }})
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

{#- |numerator| / |denominator| as DECIMAL(38, 10), rounded down ('floor') or up
    ('ceil') at the 10th decimal, exactly: DuckDB's DECIMAL division returns a DOUBLE.
    Integer arithmetic on values scaled by 1e10 (both inputs are DECIMAL(38, 10) below
    1e9, so every step fits a HUGEINT). NULL when either is NULL or the denominator 0. -#}
{% macro decimal_ratio(numerator, denominator, rounding='floor') -%}
    case
        when
            {{ numerator }} is not null
            and {{ denominator }} is not null
            and {{ denominator }} <> 0
            then cast(
                    {{ _scaled_quotient(numerator, denominator, rounding) }} // 10000000000
                    as varchar
                ) || '.' || lpad(cast(
                    {{ _scaled_quotient(numerator, denominator, rounding) }} % 10000000000
                    as varchar
                ), 10, '0')
    end::{{ decimal_type() }}
{%- endmacro %}

{% macro _scaled_quotient(numerator, denominator, rounding) -%}
    (
        (
            cast(abs({{ numerator }}) * 10000000000 as hugeint) * 10000000000
    {%- if rounding == 'ceil' %}
                + cast(abs({{ denominator }}) * 10000000000 as hugeint) - 1
    {%- endif %}
        ) // cast(abs({{ denominator }}) * 10000000000 as hugeint)
    )
{%- endmacro %}

{#- A DECIMAL as plain text without trailing zeros (for descriptions). -#}
{% macro decimal_text(expression) -%}
    rtrim(rtrim(cast({{ expression }} as varchar), '0'), '.')
{%- endmacro %}
