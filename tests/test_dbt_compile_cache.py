"""What dbt compiles the same way every run is kept between runs
(flexsync/core/dbt_compile_cache.py): Jinja templates and config schemas, in dbt's target
path. Each case runs in fresh Python processes, as the nightly runs do: the cache replaces
two methods for a whole process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flexsync.cli import drop_scripts_directory
from flexsync.core import dbt_compile_cache

REPO_ROOT = Path(__file__).resolve().parents[1]

# Renders the same text in dbt's text and native environments (their code differs: one
# makes a string, the other a Python value), checks a config schema, and says what the
# process compiled and reused.
PROCESS = r"""
import json, sys
from pathlib import Path
from flexsync.core import dbt_compile_cache
from flexsync.transform import _use_fork_locks
if len(sys.argv) > 2:
    dbt_compile_cache.FORMAT = int(sys.argv[2])
_use_fork_locks()
cache = dbt_compile_cache.installed(Path(sys.argv[1]))
loaded_schema = "dbt.contracts.project.ProjectFlags" in cache.schemas
from dbt.clients.jinja import get_rendered
from dbt_common.dataclass_schema import ValidationError
from dbt.contracts.project import ProjectFlags
source = "{% for i in range(3) %}{{ i * 2 }},{% endfor %}{{ 1 + 1 }}"
text = get_rendered(source, {})
native = get_rendered("{{ (1 + 1) | as_number }}", {}, native=True)
again = get_rendered("{{ (1 + 1) | as_number }}", {})
ProjectFlags.validate({"partial_parse": True})
try:
    ProjectFlags.validate({"partial_parse": "sometimes"})
    rejected = False
except ValidationError:
    rejected = True
dbt_compile_cache.save()
print(json.dumps({"text": text, "native": repr(native), "again": repr(again),
                  "rejected": rejected, "loaded_schema": loaded_schema,
                  "hits": cache.hits, "misses": cache.misses}))
"""


def _process(target: Path, *extra: str) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-c", PROCESS, str(target), *extra],
                            capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
                            env={**os.environ, "DO_NOT_TRACK": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    outcome: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return outcome


EXPECTED = {"text": "0,2,4,2", "native": "2", "again": "'2'", "rejected": True}


def test_a_second_process_reuses_what_the_first_compiled(tmp_path: Path) -> None:
    first = _process(tmp_path)
    assert {key: first[key] for key in EXPECTED} == EXPECTED
    assert first["misses"] == 3 and first["hits"] == 0
    assert not first["loaded_schema"]
    assert (tmp_path / dbt_compile_cache.FILE_NAME).is_file()

    second = _process(tmp_path)
    # Same results, the native template still a number and the text one a string: the
    # same text in two environments is two entries, never one reused for the other.
    assert {key: second[key] for key in EXPECTED} == EXPECTED
    assert second["misses"] == 0 and second["hits"] == 3
    assert second["loaded_schema"]  # and it still rejects what dbt's own schema rejects


def test_a_file_written_by_other_versions_is_not_used(tmp_path: Path) -> None:
    _process(tmp_path)
    other = _process(tmp_path, "999")  # another format: as another dbt or Jinja would be
    assert {key: other[key] for key in EXPECTED} == EXPECTED
    assert other["misses"] == 3 and other["hits"] == 0 and not other["loaded_schema"]
    # It rewrote the file for its own versions.
    assert _process(tmp_path, "999")["misses"] == 0


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_damaged_file_is_ignored(tmp_path: Path, damage: str) -> None:
    _process(tmp_path)
    path = tmp_path / dbt_compile_cache.FILE_NAME
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncate":
        del data[len(data) // 3:]
    else:
        data = bytearray(b"not a cache at all")
    path.write_bytes(bytes(data))
    outcome = _process(tmp_path)
    assert {key: outcome[key] for key in EXPECTED} == EXPECTED
    assert outcome["misses"] == 3 and outcome["hits"] == 0


def test_a_file_with_a_right_checksum_but_wrong_contents_is_not_used(
        tmp_path: Path) -> None:
    """What is in the file is checked too, not only its checksum and versions."""
    import hashlib
    import marshal

    _process(tmp_path)
    path = tmp_path / dbt_compile_cache.FILE_NAME
    content = marshal.loads(path.read_bytes()[32:])  # noqa: S302 - our own file
    for broken in ({key: b"not code" for key in content["templates"]},  # no code object
                   {key: "a str" for key in content["templates"]}):  # not bytes at all
        payload = marshal.dumps({**content, "templates": broken})
        path.write_bytes(hashlib.sha256(payload).digest() + payload)
        outcome = _process(tmp_path)
        assert {key: outcome[key] for key in EXPECTED} == EXPECTED
        assert outcome["misses"] == 3 and outcome["hits"] == 0


def test_the_file_s_versions_are_those_of_what_compiles() -> None:
    tag = dbt_compile_cache.version_tag()
    for package in ("jinja2", "dbt_core", "dbt_common", "dbt_adapters", "dbt_duckdb",
                    "mashumaro"):
        assert f"'{package}-" in tag.lower(), (package, tag)
    assert sys.version in tag


def test_a_target_path_that_cannot_be_written_costs_only_the_compiling(
        tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    outcome = _process(blocker / "target")  # its parent is a file: nothing can be written
    assert {key: outcome[key] for key in EXPECTED} == EXPECTED
    assert outcome["misses"] == 3


def test_the_file_is_readable_by_another_user(tmp_path: Path) -> None:
    """The image bakes it as root and the pod reads it as user 10001."""
    _process(tmp_path)
    assert (tmp_path / dbt_compile_cache.FILE_NAME).stat().st_mode & 0o777 == 0o644


def _templates_lines(output: str) -> list[str]:
    """Each flexsync process' last account of dbt's templates (`-v`), in order; a line
    `bake-compiled-templates: <pass>` starts each of the bake's processes."""
    lines: list[str] = []
    for line in output.splitlines():
        if line.startswith("bake-compiled-templates: "):
            lines.append("")
        elif "dbt's templates:" in line:
            if not lines:
                lines.append("")
            lines[-1] = line
    return lines


def test_the_nights_after_the_bake_compile_nothing(tmp_path: Path) -> None:
    """What the image bakes (scripts/install-image.sh): scripts/bake-compiled-templates.sh
    runs `flexsync transform` on a scratch warehouse, once to parse from scratch (dropped),
    once as a first night, once as an ordinary night on it. Then, as in the pod (the
    baked `dbt parse` and the baked templates in the target path), a first night and an
    ordinary one reuse every template: nothing in a template's key differs between
    processes. Real dbt."""
    flexsync = str(Path(sys.executable).parent / "flexsync")
    baked = tmp_path / "baked"
    bake = subprocess.run(["sh", str(REPO_ROOT / "scripts" / "bake-compiled-templates.sh"),
                           flexsync, str(REPO_ROOT), str(baked), "-v"],
                          env={**os.environ, "DO_NOT_TRACK": "1"}, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert bake.returncode == 0, bake.stdout[-3000:] + bake.stderr[-3000:]
    lines = _templates_lines(bake.stderr + bake.stdout)
    assert len(lines) == 3, lines

    env = {**os.environ, "BROKER_SYNC_DATA_DIR": str(tmp_path / "data"), "DO_NOT_TRACK": "1",
           "DBT_TARGET_PATH": str(tmp_path / "target"), "DBT_LOG_PATH": str(tmp_path / "logs")}
    subprocess.run([str(Path(sys.executable).parent / "dbt"), "parse", "--quiet",
                    "--project-dir", str(REPO_ROOT), "--profiles-dir", str(REPO_ROOT)],
                   env=env, cwd=REPO_ROOT, check=True, timeout=300)
    shutil.copy2(baked / dbt_compile_cache.FILE_NAME, tmp_path / "target")
    for _night in ("first-night", "next-night"):
        result = subprocess.run([flexsync, "-v", "transform"], env=env, cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        lines += _templates_lines(result.stdout + result.stderr)
    assert " 0 compiled" not in lines[1], lines  # a first night compiles
    assert " 0 compiled" not in lines[2], lines  # an ordinary night compiles more
    assert " 0 compiled, " in lines[3], lines
    assert " 0 compiled, " in lines[4], lines


def test_the_console_script_imports_nothing_from_its_own_directory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A venv's bin/ holds daff.py, a copy of a package dbt imports: found first, it was
    compiled from source every run."""
    import sysconfig

    scripts = sysconfig.get_path("scripts")
    monkeypatch.setattr(sys, "path", [scripts, "/somewhere/else"])
    drop_scripts_directory()
    assert sys.path == ["/somewhere/else"]
    monkeypatch.setattr(sys, "path", ["", scripts])  # `python -m flexsync`: the cwd first
    drop_scripts_directory()
    assert sys.path == ["", scripts]
