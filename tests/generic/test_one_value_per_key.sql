{#- Fails on every key (among rows matching `where`) that maps to more than one value. -#}
{% test one_value_per_key(model, key, value, where='true') %}

select
    {{ key }} as key_value,
    count(distinct {{ value }}) as distinct_values
from {{ model }}
where {{ where }}
group by {{ key }}
having count(distinct {{ value }}) > 1

{% endtest %}
