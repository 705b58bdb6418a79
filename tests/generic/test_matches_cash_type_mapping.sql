{#- Every mapped cash activity must come from a row of the mapping seed: its (flex_type,
    direction) has a seed row with the same activity_type and subtype. -#}
{% test matches_cash_type_mapping(model, mapping, where='true') %}

select activities.*
from {{ model }} as activities
left join {{ mapping }} as mapping
    on
        activities.flex_type = mapping.flex_type
        and activities.direction = mapping.direction
        and activities.activity_type = mapping.activity_type
        and activities.subtype is not distinct from mapping.subtype
where ({{ where }}) and mapping.flex_type is null

{% endtest %}
