{#- Wealthfolio's symbol convention (docs/mapping.md#symbols), in one place:
      1. a symbol already ending in a known Yahoo suffix (.L, .DE, ...) passes unchanged;
      2. else the resolved listing exchange decides: its suffix is appended (none for
         US listings);
      3. else a GBP (or GBX) line is London: '.L';
      4. else the symbol is unchanged.
    IBKR writes some LSE symbols with a trailing dot ('BP.', 'RR.'): the dot is dropped
    before a suffix is appended ('BP.L', not 'BP..L').
    Arguments are SQL expressions; listing_code is NULL when no listing was resolved.
    Empty seed values count as NULL (dbt unit tests read seeds as text). -#}
{% macro canonical_symbol(symbol, listing_code, listing_suffix, currency) -%}
    case
        when {{ symbol }} is null then null
        when {{ symbol_suffix(symbol) }} in (
            select nullif(known_suffixes.yahoo_suffix, '')
            from {{ ref('exchanges') }} as known_suffixes
        ) then {{ symbol }}
        when {{ listing_code }} is not null and nullif({{ listing_suffix }}, '') is null
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

{#- The asset's quote currency for Wealthfolio: the line's trading currency in major
    units (GBX/GBp -> GBP), else the listing's currency from the exchanges seed. Never
    the minor unit: Wealthfolio lets a minor unit win over a major one, so an asset in
    GBp values a GBP-quoted ETF at 1/100 (docs/upstream.md#quote-currency). -#}
{% macro wealthfolio_quote_currency(line_currency, listing_quote_currency) -%}
    coalesce({{ to_major_currency(line_currency) }}, {{ listing_quote_currency }})
{%- endmacro %}

{#- The bare ticker Wealthfolio stores (VOD for VOD.L): the canonical symbol without
    the Yahoo suffix that the exchanges seed pairs with its MIC; unchanged when the
    suffix is not the MIC's (BRK.B on XNYS keeps its '.B'). -#}
{% macro bare_ticker(symbol, exchange_mic) -%}
    case
        when {{ symbol }} is null then null
        when {{ exchange_mic }} is null then {{ symbol }}
        else coalesce((
            select
                left(
                    {{ symbol }},
                    length({{ symbol }}) - length(max(nullif(mic_suffixes.yahoo_suffix, '')))
                )
            from {{ ref('exchanges') }} as mic_suffixes
            where
                mic_suffixes.mic = {{ exchange_mic }}
                and nullif(mic_suffixes.yahoo_suffix, '') is not null
                and upper({{ symbol }}) like '%' || upper(mic_suffixes.yahoo_suffix)
            having count(*) > 0
        ), {{ symbol }})
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

{#- The exchanges seed with empty values as NULL: dbt unit tests load seed rows from
    the CSV as text, where an empty cell is '' rather than NULL. -#}
{% macro select_exchanges() -%}
    select
        exchanges_seed.ibkr_code,
        nullif(exchanges_seed.mic, '') as mic,
        nullif(exchanges_seed.yahoo_suffix, '') as yahoo_suffix,
        nullif(exchanges_seed.quote_currency, '') as quote_currency,
        exchanges_seed.is_listing_exchange
    from {{ ref('exchanges') }} as exchanges_seed
{%- endmacro %}
