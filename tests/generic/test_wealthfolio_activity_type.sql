{#- Wealthfolio v3's closed set of 14 activity types (docs/upstream.md#activity-types);
    anything else fails the server's CHECK constraint. NULL passes. -#}
{% test wealthfolio_activity_type(model, column_name) %}

select {{ column_name }} as invalid_activity_type
from {{ model }}
where {{ column_name }} not in (
    'BUY', 'SELL', 'SPLIT', 'DIVIDEND', 'INTEREST', 'DEPOSIT', 'WITHDRAWAL',
    'TRANSFER_IN', 'TRANSFER_OUT', 'FEE', 'TAX', 'CREDIT', 'ADJUSTMENT', 'UNKNOWN'
)

{% endtest %}
