#!/bin/sh
# Container entrypoint: `flexsync sync` unless other arguments are given.
#
# The root filesystem is read-only, and dbt writes target/ and logs/ on every run, so
# DBT_TARGET_PATH and DBT_LOG_PATH point at the /tmp emptyDir. The partial-parse state
# baked at build time (dbt parse in scripts/install-image.sh) lives in the read-only
# image; copy it to the writable target path once so dbt reuses it (~3 s saved per
# invocation) instead of parsing the project from scratch. The same for the templates
# dbt compiles at every build, baked beside it (flexsync/core/dbt_compile_cache.py).
set -eu
: "${DBT_TARGET_PATH:=/tmp/dbt/target}"
: "${DBT_LOG_PATH:=/tmp/dbt/logs}"
: "${FLEXSYNC_BAKED_DBT_TARGET:=/app/target}"
export DBT_TARGET_PATH DBT_LOG_PATH
mkdir -p "$DBT_TARGET_PATH" "$DBT_LOG_PATH"
baked="$FLEXSYNC_BAKED_DBT_TARGET/partial_parse.msgpack"
if [ -f "$baked" ] && [ ! -f "$DBT_TARGET_PATH/partial_parse.msgpack" ]; then
    cp "$baked" "$DBT_TARGET_PATH/partial_parse.msgpack"
fi
# Only time rides on this one: a failed copy costs the night its compiling, not the run.
baked="$FLEXSYNC_BAKED_DBT_TARGET/flexsync_compiled.marshal"
if [ -f "$baked" ] && [ ! -f "$DBT_TARGET_PATH/flexsync_compiled.marshal" ]; then
    cp "$baked" "$DBT_TARGET_PATH/flexsync_compiled.marshal" ||
        echo "docker-entrypoint: could not copy $baked (dbt compiles its templates)" >&2
fi
if [ "$#" -eq 0 ]; then
    set -- sync
fi
exec flexsync "$@"
