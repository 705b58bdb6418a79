{#- Wealthfolio's symbol convention (SPEC §4), in one place:
      1. a symbol already ending in a known Yahoo suffix (.L, .DE, ...) passes unchanged;
      2. else the resolved listing exchange decides: its suffix is appended (none for
         US listings);
      3. else a GBP (or GBX) line is London: '.L';
      4. else the symbol is unchanged.
    IBKR writes some LSE symbols with a trailing dot ('BP.', 'RR.'): the dot is dropped
    before a suffix is appended ('BP.L', not 'BP..L').
    Arguments are SQL expressions; listing_code is NULL when no listing was resolved. -#}
{% macro canonical_symbol(symbol, listing_code, listing_suffix, currency) -%}
    case
        when {{ symbol }} is null then null
        when {{ symbol_suffix(symbol) }} in (
            select known_suffixes.yahoo_suffix
            from {{ ref('exchanges') }} as known_suffixes
            where known_suffixes.yahoo_suffix is not null
        ) then {{ symbol }}
        when {{ listing_code }} is not null and {{ listing_suffix }} is null
            then {{ symbol }}
        when {{ listing_code }} is not null
            then rtrim({{ symbol }}, '.') || {{ listing_suffix }}
        when {{ currency }} in ('GBP', 'GBX', 'GBp')
            then rtrim({{ symbol }}, '.') || '.L'
        else {{ symbol }}
    end
{%- endmacro %}

{#- The trailing '.XX' of a symbol ('' when none). -#}
{% macro symbol_suffix(symbol) -%}
    regexp_extract({{ symbol }}, '\.[A-Za-z]{1,3}$')
{%- endmacro %}

{#- The currency Wealthfolio quotes the asset in: pence ('GBp') for London lines traded
    in GBP or GBX, otherwise the trade currency in major units. -#}
{% macro wealthfolio_quote_currency(exchange_mic, currency) -%}
    case
        when {{ exchange_mic }} = 'XLON' and {{ currency }} in ('GBP', 'GBX', 'GBp')
            then 'GBp'
        else {{ to_major_currency(currency) }}
    end
{%- endmacro %}

{#- Wealthfolio instrument type for the asset categories flexsync maps. -#}
{% macro wealthfolio_instrument_type(asset_category) -%}
    case
        when {{ asset_category }} in ('STK', 'ETF', 'FUND') then 'EQUITY'
    end
{%- endmacro %}

{#- Null-safe join of a row to int_ibkr__symbols_canonicalised on the attributes that
    decide its canonical symbol. -#}
{% macro instrument_join_condition(row, symbols, exchange_expression=none) -%}
    {{ row }}.symbol is not distinct from {{ symbols }}.symbol
    and {{ row }}.conid is not distinct from {{ symbols }}.conid
    and {{ row }}.listing_exchange is not distinct from {{ symbols }}.listing_exchange
    and {{ exchange_expression or (row ~ '.exchange') }}
    is not distinct from {{ symbols }}.exchange
    and {{ row }}.currency is not distinct from {{ symbols }}.currency
{%- endmacro %}
