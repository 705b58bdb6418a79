#!/bin/sh
# The image's install steps, in one place: the Dockerfile runs them, and so does
# `make image-check` (into a temp dir), so what ships is what CI tested.
#
#   scripts/install-image.sh deps      venv + runtime dependencies pinned by requirements.lock
#   scripts/install-image.sh project   flexsync package (no deps) + dbt project + bytecode + dbt parse
#                                      + compiled templates
#   scripts/install-image.sh all       both
#
# Settings (environment):
#   SRC_DIR   source tree (default: this script's repo)        VENV     venv (default /opt/venv)
#   APP_DIR   where the dbt project goes (default /app)        PYTHON   interpreter (default python3.11)
#   UV        uv binary (default uv)                           BROKER_SYNC_DATA_DIR  (default /data)
#
# Dependencies: the lock holds runtime *and* dev packages, so it is used as a constraint
# on pyproject's runtime dependencies (dev tools stay out of the image), and afterwards
# every installed distribution is checked against the lock: nothing unpinned ships. The
# lock carries every distribution's sha256 (uv pip compile --generate-hashes): uv checks
# each download against it.
#
# Bytecode: the container's root filesystem is read-only, so Python could never write
# .pyc and would recompile every module on every run (+2.6-6 s). Everything is compiled
# here with --invalidation-mode unchecked-hash: the .pyc are used without comparing
# source mtimes, which COPY between build stages need not preserve.
#
# dbt parse: run with the runtime values the profile renders (BROKER_SYNC_DATA_DIR=/data),
# so the baked target/partial_parse.msgpack is reused at run time (a changed rendered
# profile forces a full parse). dbt writes target/ and logs/ on every invocation, so at
# run time DBT_TARGET_PATH/DBT_LOG_PATH point at the /tmp emptyDir and
# docker-entrypoint.sh seeds the baked msgpack there before starting flexsync.
#
# scripts/bake-compiled-templates.sh: flexsync transform on a scratch warehouse, so that
# dbt compiles every template a first and an ordinary night render, kept in
# target/flexsync_compiled.marshal (flexsync/core/dbt_compile_cache.py) and seeded at run
# time like the msgpack (≈0.5 s a night).
set -eu

step="${1:-all}"
SRC_DIR="${SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
VENV="${VENV:-/opt/venv}"
APP_DIR="${APP_DIR:-/app}"
PYTHON="${PYTHON:-python3.11}"
UV="${UV:-uv}"
BROKER_SYNC_DATA_DIR="${BROKER_SYNC_DATA_DIR:-/data}"
export UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy DO_NOT_TRACK=1 \
    DBT_SEND_ANONYMOUS_USAGE_STATS=false PYTHONDONTWRITEBYTECODE=1

say() { printf 'install-image: %s\n' "$*" >&2; }

# Top-level packages the project itself installs (pyproject [tool.setuptools] packages;
# subpackages such as flexsync.core travel with their parent).
project_packages() {
    "$VENV/bin/python" - "$SRC_DIR/pyproject.toml" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    names = tomllib.load(f)["tool"]["setuptools"]["packages"]
print(" ".join(sorted({name.split(".")[0] for name in names})))
EOF
}

site_packages() {
    "$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
}

compile_bytecode() {
    "$VENV/bin/python" -m compileall -q -j 0 --invalidation-mode unchecked-hash "$@" >/dev/null
}

install_deps() {
    say "venv $VENV ($PYTHON)"
    "$UV" venv --quiet --python "$PYTHON" "$VENV"
    say "runtime dependencies from pyproject.toml, pinned by requirements.lock"
    "$UV" pip install --quiet --python "$VENV/bin/python" \
        -r "$SRC_DIR/pyproject.toml" -c "$SRC_DIR/requirements.lock"
    "$UV" pip freeze --python "$VENV/bin/python" | "$VENV/bin/python" -c '
import re, sys
def norm(n): return re.sub(r"[-_.]+", "-", n).lower()
lock = {}
for line in open(sys.argv[1]):
    line = line.split("#")[0].split(";")[0].strip().rstrip("\\").strip()
    if "==" in line:
        name, version = line.split("==", 1)
        lock[norm(name)] = version.strip()
bad = []
for line in sys.stdin:
    if "==" not in line:
        continue
    name, version = line.strip().split("==", 1)
    if lock.get(norm(name)) != version:
        bad.append(f"{name}=={version} (lock: {lock.get(norm(name), 'absent')})")
if bad:
    sys.exit("install-image: installed but not pinned by requirements.lock: " + ", ".join(bad))
' "$SRC_DIR/requirements.lock"
    say "compiling bytecode of the dependencies"
    compile_bytecode "$(site_packages)"
}

install_project() {
    build_dir="$(mktemp -d)"
    trap 'rm -rf "$build_dir"' EXIT
    # Build from a clean copy: no build/ or egg-info left in the source tree, and only
    # what the wheel needs.
    packages="$(project_packages)"
    cp "$SRC_DIR/pyproject.toml" "$build_dir/"
    if [ -f "$SRC_DIR/README.md" ]; then cp "$SRC_DIR/README.md" "$build_dir/"; fi
    for pkg in $packages; do
        cp -R "$SRC_DIR/$pkg" "$build_dir/$pkg"
    done
    find "$build_dir" -name __pycache__ -prune -exec rm -rf {} +
    say "flexsync package (no dependencies: those come from the lock)"
    "$UV" pip install --quiet --python "$VENV/bin/python" --no-deps --reinstall "$build_dir"
    site="$(site_packages)"
    for pkg in $packages; do
        compile_bytecode "$site/$pkg"
    done

    say "dbt project into $APP_DIR"
    [ -f "$SRC_DIR/dbt_project.yml" ] || { say "no dbt_project.yml in $SRC_DIR"; exit 1; }
    mkdir -p "$APP_DIR"
    for file in dbt_project.yml profiles.yml selectors.yml; do
        if [ -f "$SRC_DIR/$file" ]; then cp "$SRC_DIR/$file" "$APP_DIR/"; fi
    done
    # Only dbt's own files: SQL, YAML, seeds and docs (tests/ also holds the Python suite).
    for dir in models macros seeds snapshots analyses tests; do
        if [ ! -d "$SRC_DIR/$dir" ]; then continue; fi
        (cd "$SRC_DIR" && find "$dir" -type f \
            \( -name '*.sql' -o -name '*.yml' -o -name '*.yaml' -o -name '*.csv' -o -name '*.md' \) \
            ! -path '*/fixtures/*' ! -path '*/__pycache__/*' -print) |
        while IFS= read -r file; do
            mkdir -p "$APP_DIR/$(dirname "$file")"
            cp "$SRC_DIR/$file" "$APP_DIR/$file"
        done
    done
    cp "$SRC_DIR/scripts/docker-entrypoint.sh" "$APP_DIR/docker-entrypoint.sh"
    chmod 0755 "$APP_DIR/docker-entrypoint.sh"

    say "dbt parse (baked partial-parse state, BROKER_SYNC_DATA_DIR=$BROKER_SYNC_DATA_DIR)"
    log_dir="$(mktemp -d)"
    (cd "$APP_DIR" && BROKER_SYNC_DATA_DIR="$BROKER_SYNC_DATA_DIR" \
        DBT_PROJECT_DIR="$APP_DIR" DBT_PROFILES_DIR="$APP_DIR" \
        DBT_TARGET_PATH="$APP_DIR/target" DBT_LOG_PATH="$log_dir" \
        "$VENV/bin/dbt" parse --quiet) || { say "dbt parse failed"; exit 1; }
    rm -rf "$log_dir"
    [ -f "$APP_DIR/target/partial_parse.msgpack" ] || {
        say "dbt parse left no target/partial_parse.msgpack"; exit 1; }

    say "flexsync transform on a scratch warehouse, three times (baked compiled templates)"
    sh "$SRC_DIR/scripts/bake-compiled-templates.sh" "$VENV/bin/flexsync" "$APP_DIR" \
        "$APP_DIR/target" || { say "baking the compiled templates failed"; exit 1; }
}

case "$step" in
    deps) install_deps ;;
    project) install_project ;;
    all) install_deps; install_project ;;
    *) say "usage: $0 deps|project|all"; exit 2 ;;
esac
say "$step: done"
