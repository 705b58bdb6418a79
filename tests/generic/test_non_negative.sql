{#- Fails on every row whose value is negative (NULL passes: use not_null for that). -#}
{% test non_negative(model, column_name) %}

select {{ column_name }} as negative_value
from {{ model }}
where {{ column_name }} < 0

{% endtest %}
