{#- Fails on every row (among rows matching `where`) for which `expression` is not true. -#}
{% test expression_is_true(model, expression, where='true') %}

select *
from {{ model }}
where ({{ where }}) and not coalesce(({{ expression }}), false)

{% endtest %}
