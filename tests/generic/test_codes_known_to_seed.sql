{#- Lists the distinct codes in `column_name` that the seed's `seed_column` does not
    know. Used at severity warn on exchange codes: an unknown listing exchange falls
    back to the currency rule, so it should be added to seeds/exchanges.csv. -#}
{% test codes_known_to_seed(model, column_name, seed, seed_column) %}

with

observed as (

    select distinct {{ column_name }} as code
    from {{ model }}
    where {{ column_name }} is not null

),

known as (

    select {{ seed_column }} as code from {{ seed }}

)

select observed.code as unknown_code
from observed
left join known
    on observed.code = known.code
where known.code is null

{% endtest %}
