{#- One row per deduplicated IBKR corporate action row with its fate, by the action's
    type (seeds/corporate_action_types.csv; a row without a type takes the type its
    description names, e.g. "SPLIT 1 FOR 25"):
      split (FS, RS) and stock dividend (SD) -> one SPLIT of the line Wealthfolio holds,
          ratio n/m ("SPLIT n FOR m"; SD: 1 + n/m), checked against the quantity IBKR
          reports (the shares added, or the old line's shares out and the new line's in);
      change_of_line (IC, TC, TO) -> the old line out, the new line in at the carried
          cost, and the cash (a SELL of the old line when it is all cash, else a CREDIT);
      spin_off (SO) -> the new shares in;
      anything else -> unmapped: "corporate action <type>: review".
    The activities are built in int_ibkr__corporate_action_activities. -#}
with

corporate_actions as (

    select * from {{ ref('stg_ibkr__corporate_actions') }}

),

symbols as (

    select * from {{ ref('int_ibkr__symbols_canonicalised') }}

),

action_types as (

    select * from {{ ref('corporate_action_types') }}

),

trades as (

    select * from {{ ref('int_ibkr__trades_classified') }}
    where disposition = 'mapped' and not is_fx_conversion

),

-- The symbol Wealthfolio holds a line under: the canonical symbol the line's own
-- trades or positions used (IBKR renames an old line GCM -> GCM.OLD), else the row's.
symbols_by_conid as (

    select
        symbols.conid,
        symbols.canonical_symbol,
        symbols.exchange_mic,
        symbols.quote_currency
    from symbols
    where symbols.conid is not null and symbols.symbol not like '%.OLD'
    qualify row_number() over (
            partition by symbols.conid
            order by symbols.exchange is null, symbols.canonical_symbol
        ) = 1

),

typed as (

    select
        corporate_actions.*,
        coalesce(
            corporate_actions.action_type,
            case
                when regexp_matches(corporate_actions.description, 'SPLIT \d+ FOR \d+')
                    then case
                            when try_cast(regexp_extract(
                                    corporate_actions.description, 'SPLIT (\d+) FOR (\d+)', 1
                                ) as hugeint)
                                >= try_cast(regexp_extract(
                                    corporate_actions.description, 'SPLIT (\d+) FOR (\d+)', 2
                                ) as hugeint)
                                then 'FS'
                            else 'RS'
                        end
            end,
            (
                select min(inferred.action_type)
                from action_types as inferred
                where
                    inferred.treatment <> 'split'
                    and regexp_matches(corporate_actions.description, inferred.description_pattern)
            )
        ) as resolved_action_type,
        -- The rows of one action: IBKR's actionID, else the description's terms
        -- (without the trailing "(SYMBOL, NAME, ISIN)") on the same day.
        coalesce(
            corporate_actions.action_id,
            md5(concat_ws(
                '|',
                corporate_actions.broker_account_id,
                regexp_replace(corporate_actions.description, '\s*\([^()]*\)\s*$', ''),
                cast(corporate_actions.action_at as date),
                corporate_actions.report_date
            ))
        ) as action_group,
        try_cast(regexp_extract(
            corporate_actions.description, '(\d+) FOR (\d+)', 1
        ) as {{ decimal_type() }}) as terms_new,
        try_cast(regexp_extract(
            corporate_actions.description, '(\d+) FOR (\d+)', 2
        ) as {{ decimal_type() }}) as terms_old,
        coalesce(
            corporate_actions.proceeds, -corporate_actions.amount, 0
        ) as cash_proceeds,
        'corporate_action:' || corporate_actions.corporate_action_row_key as source_row_key,
        'ibkr:ca:' || regexp_replace(corporate_actions.corporate_action_row_key, '^tx:', '')
            as external_id
    from corporate_actions

),

with_treatment as (

    select
        typed.*,
        action_types.treatment,
        coalesce(
            by_conid.canonical_symbol,
            regexp_replace(row_symbol.canonical_symbol, '\.OLD(\.[A-Za-z]{1,3})?$', '\1')
        ) as line_symbol,
        coalesce(by_conid.exchange_mic, row_symbol.exchange_mic) as line_exchange_mic,
        coalesce(by_conid.quote_currency, row_symbol.quote_currency) as line_quote_currency
    from typed
    left join action_types
        on typed.resolved_action_type = action_types.action_type
    left join symbols_by_conid as by_conid
        on typed.conid = by_conid.conid
    left join symbols as row_symbol
        on {{ instrument_join_condition(
            'typed', 'row_symbol', exchange_expression='cast(null as varchar)'
        ) }}

),

-- What flexsync's own mapped trades say was held, and at what average cost, before the
-- action: the check on a split's quantity and the cost a change of line carries.
held_before as (

    select
        with_treatment.broker_account_id,
        with_treatment.corporate_action_row_key,
        sum(
            case when trades.buy_sell = 'BUY' then 1 else -1 end * trades.activity_quantity
        ) as held_quantity,
        sum(case when trades.buy_sell = 'BUY' then -trades.trade_net_cash end)
            as bought_cost,
        sum(case when trades.buy_sell = 'BUY' then trades.activity_quantity end)
            as bought_quantity
    from with_treatment
    inner join trades
        on
            with_treatment.broker_account_id = trades.broker_account_id
            and with_treatment.line_symbol = trades.canonical_symbol
            and trades.trade_date <= cast(with_treatment.action_at as date)
    group by all

),

groups as (

    select
        with_treatment.broker_account_id,
        with_treatment.action_group,
        count(*) filter (where with_treatment.quantity < 0) as old_line_rows,
        count(*) filter (where with_treatment.quantity > 0) as new_line_rows,
        min(with_treatment.line_symbol) filter (where with_treatment.quantity < 0)
            as old_line_symbol,
        min(with_treatment.line_symbol) filter (where with_treatment.quantity > 0)
            as new_line_symbol,
        sum(with_treatment.quantity) filter (where with_treatment.quantity < 0)
            as old_line_quantity,
        sum(with_treatment.quantity) filter (where with_treatment.quantity > 0)
            as new_line_quantity,
        sum(with_treatment.cash_proceeds) as group_cash
    from with_treatment
    group by all

),

with_context as (

    select
        with_treatment.*,
        groups.old_line_rows,
        groups.new_line_rows,
        groups.old_line_symbol,
        groups.new_line_symbol,
        groups.old_line_quantity,
        groups.new_line_quantity,
        groups.group_cash,
        held_before.held_quantity,
        regexp_replace(groups.old_line_symbol, '\.[A-Za-z]{1,3}$', '') as old_line_ticker,
        regexp_replace(groups.new_line_symbol, '\.[A-Za-z]{1,3}$', '') as new_line_ticker,
        -- n of "n FOR m" as the split multiplies: n/m for a split, (n + m)/m for SD.
        with_treatment.terms_new + case
            when with_treatment.treatment = 'stock_dividend' then with_treatment.terms_old
            else 0
        end as ratio_numerator,
        {{ decimal_ratio('held_before.bought_cost', 'held_before.bought_quantity') }}
            as average_cost,
        case
            when with_treatment.treatment = 'split'
                then {{ decimal_ratio('with_treatment.terms_new', 'with_treatment.terms_old') }}
            when with_treatment.treatment = 'stock_dividend'
                then 1 + {{ decimal_ratio('with_treatment.terms_new', 'with_treatment.terms_old') }}
        end as split_ratio,
        with_treatment.treatment in ('split', 'stock_dividend')
        and groups.old_line_rows = 1
        and groups.new_line_rows = 1 as is_two_row_split
    from with_treatment
    left join groups
        on
            with_treatment.broker_account_id = groups.broker_account_id
            and with_treatment.action_group = groups.action_group
    left join held_before
        on
            with_treatment.broker_account_id = held_before.broker_account_id
            and with_treatment.corporate_action_row_key = held_before.corporate_action_row_key

),

classified as (

    select
        with_context.*,
        case
            when with_context.resolved_action_type is null
                then 'corporate action without a type: review ('
                    || coalesce(with_context.description, 'no description') || ')'
            when with_context.treatment is null
                then 'corporate action ' || with_context.resolved_action_type || ': review ('
                    || coalesce(with_context.description, 'no description') || ')'
            when with_context.asset_category is not null
                and with_context.asset_category not in ('STK', 'ETF', 'FUND')
                then 'corporate action ' || with_context.resolved_action_type
                    || ' on unsupported asset category ' || with_context.asset_category
            when with_context.action_at is null and with_context.report_date is null
                then 'unparseable date'
            when with_context.line_symbol is null then 'no symbol'
            when {{ activity_time_zone('with_context.action_at_zone') }} is null
                then 'unknown time zone ' || with_context.action_at_zone
            -- Splits and stock dividends.
            when
                with_context.treatment in ('split', 'stock_dividend')
                and (with_context.split_ratio is null or with_context.split_ratio <= 0)
                then 'corporate action ' || with_context.resolved_action_type
                    || ': no "n FOR m" terms in the description: review'
            when
                with_context.treatment in ('split', 'stock_dividend')
                and with_context.split_ratio * with_context.terms_old
                <> with_context.ratio_numerator
                then 'corporate action ' || with_context.resolved_action_type
                    || ': ratio not exact in 10 decimals: review'
            -- GCM.TO (the old line, as traded) and GCM (the new line, no listing yet)
            -- are one ticker.
            when
                with_context.is_two_row_split
                and coalesce(with_context.old_line_ticker, '')
                <> coalesce(with_context.new_line_ticker, '')
                then 'corporate action ' || with_context.resolved_action_type
                    || ' with a change of symbol (' || coalesce(with_context.old_line_symbol, '?')
                    || ' -> ' || coalesce(with_context.new_line_symbol, '?') || '): review'
            when
                with_context.is_two_row_split
                and with_context.new_line_quantity
                <> cast(
                    -with_context.old_line_quantity
                    * with_context.split_ratio as {{ decimal_type() }}
                )
                then 'corporate action ' || with_context.resolved_action_type
                    || ': quantities do not match the ratio: review'
            when
                with_context.is_two_row_split and with_context.quantity > 0
                then 'new line of a split: the SPLIT of ' || with_context.line_symbol
                    || ' carries it'
            when
                with_context.treatment in ('split', 'stock_dividend')
                and not with_context.is_two_row_split
                and (
                    with_context.quantity is null
                    or with_context.quantity = 0
                    or sign(with_context.quantity) <> sign(with_context.split_ratio - 1)
                    or with_context.held_quantity is not null
                    and abs(
                        with_context.quantity
                        - cast(
                            with_context.held_quantity * (with_context.split_ratio - 1)
                            as {{ decimal_type() }}
                        )
                    ) > 0.000001
                )
                then 'corporate action ' || with_context.resolved_action_type
                    || ': the shares IBKR adds do not match the ratio: review'
            when with_context.treatment in ('split', 'stock_dividend')
                and with_context.cash_proceeds <> 0
                then 'corporate action ' || with_context.resolved_action_type
                    || ' with cash in lieu: review'
            -- Changes of line and spin-offs.
            when
                with_context.treatment = 'change_of_line'
                and coalesce(with_context.quantity, 0) = 0
                and with_context.cash_proceeds = 0
                then 'corporate action ' || with_context.resolved_action_type
                    || ' row without shares or cash'
            when with_context.treatment = 'spin_off' and coalesce(with_context.quantity, 0) <= 0
                then 'corporate action SO without new shares: review'
        end as unmapped_reason
    from with_context

),

final as (

    select
        classified.*,
        case when classified.unmapped_reason is null then 'mapped' else 'unmapped' end
            as disposition,
        coalesce(classified.action_at, cast(classified.report_date as timestamp))
            as action_moment
    from classified

)

select * from final
