{#- Every mapped cash activity must come from a row of the mapping seed: its (flex_type,
    direction) has a seed row with the same activity_type and subtype. -#}
{% test matches_cash_type_mapping(model, mapping, where='true') %}

with

activities as (

    select * from {{ model }} where {{ where }}

),

mapping as (

    select
        flex_type,
        direction,
        activity_type,
        nullif(subtype, '') as subtype
    from {{ mapping }}

)

select activities.*
from activities
left join mapping
    on
        activities.flex_type = mapping.flex_type
        and activities.direction = mapping.direction
        and activities.activity_type = mapping.activity_type
        and activities.subtype is not distinct from mapping.subtype
where mapping.flex_type is null

{% endtest %}
