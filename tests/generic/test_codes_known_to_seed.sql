{#- Lists the distinct codes in `column_name` that the seed's `seed_column` does not
    know. Used at severity warn on exchange codes: an unknown listing exchange falls
    back to the currency rule, so it should be added to seeds/exchanges.csv. -#}
{% test codes_known_to_seed(model, column_name, seed, seed_column) %}

select distinct observed.{{ column_name }} as unknown_code
from {{ model }} as observed
left join {{ seed }} as known
    on observed.{{ column_name }} = known.{{ seed_column }}
where observed.{{ column_name }} is not null and known.{{ seed_column }} is null

{% endtest %}
