#!/bin/sh
# The templates dbt compiles in a night, baked beside the partial-parse state
# (flexsync/core/dbt_compile_cache.py). The image runs it (scripts/install-image.sh), and
# so do `make bench` and tests/test_dbt_compile_cache.py.
#
#   scripts/bake-compiled-templates.sh FLEXSYNC PROJECT_DIR OUT_DIR [flexsync options]
#
# `FLEXSYNC transform` on a scratch warehouse, three times: the first parses from scratch
# (dbt then compiles every macro file it reads) and what it compiled is dropped; the
# second is a pod's first night (a partial parse, a build from an empty warehouse), the
# third an ordinary night on that warehouse (the incremental models' other path). What
# those two compiled goes to OUT_DIR/flexsync_compiled.marshal.
set -eu
flexsync="$1"
project="$2"
out="$3"
shift 3
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for pass in parse first-night next-night; do
    echo "bake-compiled-templates: $pass" >&2
    case "$pass" in
        next-night) ;;
        *) rm -rf "$scratch/data" "$scratch/target/flexsync_compiled.marshal" ;;
    esac
    (cd "$project" && FLEXSYNC_PROJECT_DIR="$project" \
        BROKER_SYNC_DATA_DIR="$scratch/data" \
        DBT_TARGET_PATH="$scratch/target" DBT_LOG_PATH="$scratch/logs" \
        "$flexsync" "$@" transform) || {
        echo "bake-compiled-templates: flexsync transform ($pass) failed" >&2; exit 1; }
done
mkdir -p "$out"
cp "$scratch/target/flexsync_compiled.marshal" "$out/" || {
    echo "bake-compiled-templates: flexsync transform left no flexsync_compiled.marshal" >&2
    exit 1; }
