"""Deployment artefacts: Kubernetes manifests, alert rules, Dockerfile, image install script.

Offline only: kubernetes-validate's bundled schemas, Debian's promtool, and the
image's own install script run into a temp dir (the slow test, `make image-check`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kv

from flexsync.core.logs import JsonFormatter, ScrubbingFormatter
from flexsync.loaders import pushgateway as pg
from tests.plugins.common import REPO_ROOT
from tests.plugins.pushgateway import require_binary

DEPLOY = REPO_ROOT / "deploy"
SPEC = REPO_ROOT.parent / "shared" / "SPEC.md"
SECRET_NAME = "broker-sync-secrets"
# SPEC §2 variables set as plain values: paths tied to this manifest's volumes, and the
# cluster's Pushgateway (not in Vault secret/broker-sync).
PLAIN_ENV = {
    "BROKER_SYNC_DATA_DIR": "/data", "WF_SESSION_PATH": "/data/.wealthfolio-session",
    "PUSHGATEWAY_URL": "http://prometheus-prometheus-pushgateway.monitoring:9091",
}
SPEC_VARIABLES = {
    "IBKR_FLEX_TOKEN", "IBKR_FLEX_QUERY_ID", "IBKR_ACCOUNT_ID", "IBKR_ACCOUNT_ID_UPSTREAM",
    "WF_BASE_URL", "WF_PASSWORD", "WF_USERNAME", "WF_SESSION_PATH", "PUSHGATEWAY_URL",
    "BROKER_SYNC_DATA_DIR",
}
K8S_VERSIONS = ["1.30.0", kv.latest_version()]
# Vault secret/broker-sync's keys (shared with the other broker-sync providers): the env
# variable each one becomes in the CronJob.
VAULT_KEYS = {
    "IBKR_FLEX_TOKEN": "ibkr_flex_token", "IBKR_FLEX_QUERY_ID": "ibkr_flex_query_id",
    "IBKR_ACCOUNT_ID": "ibkr_account_id", "IBKR_ACCOUNT_ID_UPSTREAM": "ibkr_account_id_upstream",
    "WF_BASE_URL": "wf_base_url", "WF_USERNAME": "wf_username", "WF_PASSWORD": "wf_password",
}
# The seed of that Vault path as the stack holds it (made-up values).
VAULT_SEED = {
    "ibkr_flex_token": "vaultSeedToken0123456789", "ibkr_flex_query_id": "654321",
    "ibkr_account_id": "6f1f7a2e-1d0c-4f55-9a35-0d3f2b7c9e11",
    "ibkr_account_id_upstream": "U7654321", "wf_base_url": "http://wealthfolio.wealthfolio:8088",
    "wf_username": "", "wf_password": "vault-seed-Pa55word",
}
PUSHGATEWAY_URL = PLAIN_ENV["PUSHGATEWAY_URL"]
POD_TMP = "/tmp"  # noqa: S108 - the pod's emptyDir mount, not a temp file of ours


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in load_docs(path):
            if "kind" in doc and "apiVersion" in doc:
                found.append((path, doc))
    return found


def only(kind: str) -> dict[str, Any]:
    docs = [doc for _, doc in manifests() if doc["kind"] == kind]
    assert len(docs) == 1, f"expected one {kind} under deploy/, found {len(docs)}"
    return docs[0]


@pytest.fixture(scope="module")
def cronjob() -> dict[str, Any]:
    return only("CronJob")


@pytest.fixture(scope="module")
def pod_spec(cronjob: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


# --- Kubernetes manifests -----------------------------------------------------------------


def test_deploy_holds_the_expected_manifests() -> None:
    kinds = sorted(doc["kind"] for _, doc in manifests())
    assert kinds == ["CronJob", "ExternalSecret", "Namespace", "NetworkPolicy",
                     "PersistentVolumeClaim", "Secret"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_strictly(version: str) -> None:
    checked = 0
    for path, doc in manifests():
        if doc["apiVersion"].startswith("external-secrets.io/"):
            continue  # a CRD: no bundled schema (checked below)
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{path.name}: {doc['kind']} invalid for Kubernetes {version}: {exc}")
        checked += 1
    assert checked == 5


def test_strict_validation_catches_a_misspelt_field(cronjob: dict[str, Any]) -> None:
    # Proves the validator is strict in this install: `timezone` is not `timeZone`.
    broken = json.loads(json.dumps(cronjob))
    broken["spec"]["timezone"] = broken["spec"].pop("timeZone")
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_kubernetes_validate_cli_passes() -> None:
    cli = Path(sys.executable).parent / "kubernetes-validate"
    if not cli.exists():
        pytest.skip(f"{cli} not installed")
    files = [str(DEPLOY / name) for name in ("cronjob.yaml", "pvc.yaml", "secret.example.yaml",
                                             "networkpolicy.yaml", "namespace.yaml")]
    result = subprocess.run(
        [str(cli), "--strict", "--quiet", *files], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_cronjob_schedule_and_job_policy(cronjob: dict[str, Any]) -> None:
    spec = cronjob["spec"]
    assert spec["schedule"] == "0 2 * * *"
    assert spec["timeZone"] == "Europe/London"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] <= 6 * 3600
    assert spec["successfulJobsHistoryLimit"] >= 1
    assert spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert 0 <= job["backoffLimit"] <= 2
    # Above the Flex polling deadline (10 min), well below the 24 h schedule.
    assert 600 < job["activeDeadlineSeconds"] <= 4 * 3600
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    # Configuration (2) and account-guard (3) failures are not retried.
    rule = job["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob"
    assert set(rule["onExitCodes"]["values"]) == {2, 3}


def test_cronjob_resources(container: dict[str, Any]) -> None:
    resources = container["resources"]
    assert resources["requests"]["memory"] == "128Mi"
    assert resources["limits"]["memory"] == "256Mi"


def test_cronjob_runs_non_root_on_a_read_only_root_filesystem(
    pod_spec: dict[str, Any], container: dict[str, Any]
) -> None:
    pod_security = pod_spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == 10001
    assert pod_security["fsGroup"] == 10001
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security.get("runAsUser", 10001) == 10001
    assert pod_spec["automountServiceAccountToken"] is False


def test_cronjob_volumes(pod_spec: dict[str, Any], container: dict[str, Any]) -> None:
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert set(mounts) == {"/data", POD_TMP}
    pvc = only("PersistentVolumeClaim")
    assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == (
        pvc["metadata"]["name"]
    )
    assert "emptyDir" in volumes[mounts[POD_TMP]]
    env = {e["name"]: e.get("value") for e in container["env"]}
    # dbt's writable paths are on the emptyDir (the root filesystem is read-only).
    for name in ("DBT_TARGET_PATH", "DBT_LOG_PATH", "TMPDIR"):
        assert env[name].startswith(POD_TMP), name
    assert env["DO_NOT_TRACK"] == "1"
    # The flexsync command sets glibc's arena limit itself (flexsync/core/heap.py).
    assert "MALLOC_ARENA_MAX" not in env


def spec_variables() -> set[str]:
    """The variable names of SPEC §2 (from ../shared when present, else the known list)."""
    if not SPEC.exists():
        return SPEC_VARIABLES
    text = SPEC.read_text()
    section = text[text.index("## 2. Configuration"): text.index("## 3.")]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    names = {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]+)`", row)}
    assert names, "SPEC §2 table not found"
    return names


def test_every_spec_variable_is_set_from_the_secret(container: dict[str, Any]) -> None:
    variables = spec_variables()
    assert variables >= SPEC_VARIABLES - {"WF_USERNAME"}
    env = {e["name"]: e for e in container["env"]}
    missing = variables - set(env)
    assert not missing, f"CronJob lacks SPEC §2 variables: {sorted(missing)}"
    for name in variables:
        entry = env[name]
        if name in PLAIN_ENV:
            assert entry["value"] == PLAIN_ENV[name], name
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        assert ref["name"] == SECRET_NAME, name
        # Vault secret/broker-sync (shared with the other providers) has lowercase keys.
        assert ref["key"] == VAULT_KEYS[name], name
        # Only the ignored WF_USERNAME may be absent from the secret.
        assert ref.get("optional", False) is (name == "WF_USERNAME"), name


def secret_refs(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """env name -> its secretKeyRef, for the variables read from the Secret."""
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]
            if "secretKeyRef" in e.get("valueFrom", {})}


def test_secret_sources_provide_every_required_key(container: dict[str, Any]) -> None:
    refs = secret_refs(container)
    required = {ref["key"] for ref in refs.values() if not ref.get("optional")}
    assert required == set(VAULT_KEYS.values()) - {"wf_username"}
    secret = only("Secret")
    assert secret["metadata"]["name"] == SECRET_NAME
    assert required <= set(secret["stringData"]) <= {ref["key"] for ref in refs.values()}
    external = only("ExternalSecret")
    assert external["spec"]["target"]["name"] == SECRET_NAME
    assert external["spec"]["dataFrom"][0]["extract"]["key"] == "secret/broker-sync"
    # Synced as-is: no rewrite that would change the keys' case.
    assert "rewrite" not in external["spec"]["dataFrom"][0]
    assert external["metadata"]["namespace"] == only("CronJob")["metadata"]["namespace"]


def test_pushgateway_url_is_a_plain_overridable_value(container: dict[str, Any]) -> None:
    env = {e["name"]: e for e in container["env"]}
    assert env["PUSHGATEWAY_URL"] == {"name": "PUSHGATEWAY_URL", "value": PUSHGATEWAY_URL}


def pod_env(container: dict[str, Any], secret_data: dict[str, str]) -> dict[str, str]:
    """The environment the kubelet gives the container: plain values, and each secretKeyRef
    resolved from the Secret (a missing non-optional key is CreateContainerConfigError)."""
    env: dict[str, str] = {}
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        assert ref["name"] == SECRET_NAME
        if ref["key"] in secret_data:
            env[entry["name"]] = secret_data[ref["key"]]
        elif not ref.get("optional"):
            pytest.fail(f"CreateContainerConfigError: key {ref['key']!r} not in {SECRET_NAME}")
    return env


def test_the_pod_starts_with_the_secret_synced_from_vault(
    container: dict[str, Any], tmp_path: Path
) -> None:
    """Vault secret/broker-sync as the stack holds it -> the Secret the ExternalSecret
    renders (dataFrom.extract: every key as it is) -> the CronJob's env -> flexsync."""
    external = only("ExternalSecret")
    assert [list(item) for item in external["spec"]["dataFrom"]] == [["extract"]]
    # The ExternalSecret copies every key of the Vault path verbatim, other providers' too.
    secret_data = {**VAULT_SEED, "other_provider_token": "not-ours"}
    env = pod_env(container, secret_data)
    from flexsync.core.config import load_settings, require

    settings = load_settings(env)
    require(settings, "flex_token", "flex_query_id", "wf_account_id", "upstream_account_ids",
            "wf_base_url", "wf_password", "pushgateway_url")
    assert settings.flex_token.get() == VAULT_SEED["ibkr_flex_token"]
    assert settings.wf_password.get() == VAULT_SEED["wf_password"]
    assert settings.flex_query_id == VAULT_SEED["ibkr_flex_query_id"]
    assert settings.wf_account_id == VAULT_SEED["ibkr_account_id"]
    assert settings.upstream_account_ids == (VAULT_SEED["ibkr_account_id_upstream"],)
    assert settings.wf_base_url == VAULT_SEED["wf_base_url"]
    assert settings.pushgateway_url == PUSHGATEWAY_URL
    # And the real command starts with it: `flexsync status` resolves the configuration.
    # Only the paths tied to the pod's volumes move to a temp dir (no /data here).
    run_env = {**{k: v for k, v in os.environ.items() if k not in env}, **env,
               "BROKER_SYNC_DATA_DIR": str(tmp_path), "WF_SESSION_PATH": str(tmp_path / "s"),
               "DBT_TARGET_PATH": str(tmp_path / "t"), "DBT_LOG_PATH": str(tmp_path / "l"),
               "TMPDIR": str(tmp_path), "COLUMNS": "200"}
    status = subprocess.run([sys.executable, "-m", "flexsync", "status"], env=run_env,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stdout + status.stderr
    for shown in ("Flex token", "Wealthfolio password"):
        assert re.search(rf"{shown}\s*│?\s*set", status.stdout), status.stdout
    assert VAULT_SEED["ibkr_account_id_upstream"] in status.stdout
    for secret in (VAULT_SEED["ibkr_flex_token"], VAULT_SEED["wf_password"]):
        assert secret not in status.stdout + status.stderr


# --- Prometheus rules ---------------------------------------------------------------------


def test_prometheus_rules_check_and_unit_tests_pass() -> None:
    promtool = require_binary("promtool")
    check = subprocess.run(
        [promtool, "check", "rules", "prometheus-rules.yaml"],
        cwd=DEPLOY, capture_output=True, text=True, timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        [promtool, "test", "rules", "prometheus-rules.test.yaml"],
        cwd=DEPLOY, capture_output=True, text=True, timeout=120,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr
    assert "SUCCESS" in unit.stdout


def alert_rules(path: Path) -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    return {rule["alert"]: rule for group in doc["groups"] for rule in group["rules"]}


def test_prometheus_rules_use_the_pushed_metric_names() -> None:
    rules = alert_rules(DEPLOY / "prometheus-rules.yaml")
    assert {"IBKRPositionDrift", "IBKRCashDrift", "IBKRSyncStale", "IBKRSyncFailed"} <= set(
        rules)
    drift = rules["IBKRPositionDrift"]
    assert pg.DRIFT_METRIC in drift["expr"] and "> 0.01" in drift["expr"]
    assert drift["for"] == "24h"
    cash = rules["IBKRCashDrift"]
    assert f"abs({pg.CASH_DRIFT_METRIC}{{" in cash["expr"] and "> 0.01" in cash["expr"]
    assert cash["for"] == "24h" and f'job="{pg.DEFAULT_JOB}"' in cash["expr"]
    stale = rules["IBKRSyncStale"]
    assert pg.LAST_SUCCESS_METRIC in stale["expr"] and "36 * 3600" in stale["expr"]
    # Never a success, but runs: the account is kept; nothing pushed at all: absent().
    assert "unless on (account)" in stale["expr"]
    absent = re.search(r"absent\(\{__name__=~\"([^\"]+)\"", stale["expr"])
    assert absent and {pg.LAST_RUN_METRIC, pg.LAST_SUCCESS_METRIC} == {
        name for name in (pg.LAST_RUN_METRIC, pg.LAST_SUCCESS_METRIC)
        if re.fullmatch(absent[1], name)}
    failed = rules["IBKRSyncFailed"]
    assert pg.EXIT_CODE_METRIC in failed["expr"] and "!= 0" in failed["expr"]
    assert failed["labels"]["severity"] == "warning"
    job = f'job="{pg.DEFAULT_JOB}"'
    assert job in drift["expr"] and job in stale["expr"] and job in failed["expr"]
    # Both alerts are exercised by the promtool unit tests.
    tests = yaml.safe_load((DEPLOY / "prometheus-rules.test.yaml").read_text())
    tested = {case["alertname"] for t in tests["tests"] for case in t["alert_rule_test"]}
    assert tested == set(rules)


# --- Loki rule ----------------------------------------------------------------------------

LOGQL_SHAPE = re.compile(
    r"^sum by \((?P<by>\w+)\) \(count_over_time\("
    r"\{(?P<selector>[^{}]+)\} \|~ \"(?P<regex>[^\"]+)\" \[(?P<range>\d+[smhd])\]"
    r"\)\) > 0$"
)


def loki_rule() -> dict[str, Any]:
    rules = alert_rules(DEPLOY / "loki-rules.yaml")
    assert set(rules) == {"IBKRFlexTokenInvalid"}
    return rules["IBKRFlexTokenInvalid"]


def test_loki_rule_is_well_formed_logql(pod_spec: dict[str, Any], cronjob: dict[str, Any]) -> None:
    expr = loki_rule()["expr"].strip()
    assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}")
    match = LOGQL_SHAPE.match(expr)
    assert match, f"unexpected LogQL shape: {expr}"
    selector = dict(re.findall(r'(\w+)="([^"]*)"', match["selector"]))
    # The stream selector names the CronJob's pods.
    pod_labels = cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert selector, match["selector"]
    for key, value in selector.items():
        assert pod_labels.get(key) == value, (key, value)
    re.compile(match["regex"])


def flexsync_log_lines(message: str, code: str) -> list[str]:
    """The line flexsync's own formatters write for a Flex error, in both formats."""
    record = logging.LogRecord("flexsync", logging.ERROR, __file__, 1, message, None, None)
    record.code = code
    text = ScrubbingFormatter("%(asctime)s %(levelname)-7s %(message)s").format(record)
    return [text, JsonFormatter().format(record)]


@pytest.mark.parametrize(
    ("code", "fires"), [("1012", True), ("1015", True), ("1019", False), ("1003", False)]
)
def test_loki_rule_matches_flex_token_errors_in_both_log_formats(code: str, fires: bool) -> None:
    match = LOGQL_SHAPE.match(loki_rule()["expr"].strip())
    assert match
    regex = re.compile(match["regex"])  # RE2 and Python agree on this subset
    for line in flexsync_log_lines(f"IBKR Flex error {code}: the service refused", code):
        assert bool(regex.search(line)) is fires, line


# --- Dockerfile ---------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    text = (REPO_ROOT / "Dockerfile").read_text()
    logical: list[str] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    stages: list[list[tuple[str, str]]] = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, args.strip()))
    return stages


def test_dockerfile_is_multi_stage_and_runs_non_root() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    runtime = stages[-1]
    text = (REPO_ROOT / "Dockerfile").read_text()
    # The base image is pinned by digest: a rebuild never changes it silently.
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}$", text,
                     re.M)
    users = [args for instruction, args in runtime if instruction == "USER"]
    assert users, "runtime stage sets no USER"
    assert users[-1].split(":")[0] == "10001"
    order = [instruction for instruction, _ in runtime]
    assert order.index("USER") < order.index("ENTRYPOINT")
    entrypoint = json.loads(dict(runtime)["ENTRYPOINT"])  # exec form, no shell wrapper
    assert entrypoint == ["/app/docker-entrypoint.sh"]
    assert json.loads(dict(runtime)["CMD"]) == ["sync"]
    # Code comes from the builder, root-owned: the runtime user cannot change it.
    copies = [args for instruction, args in runtime if instruction == "COPY"]
    assert copies and all("--from=builder" in c and "--chown" not in c for c in copies)


def test_dockerfile_environment() -> None:
    runtime_env = " ".join(args for i, args in dockerfile_stages()[-1] if i == "ENV")
    for setting in (
        "DO_NOT_TRACK=1",
        "DBT_SEND_ANONYMOUS_USAGE_STATS=false",
        "BROKER_SYNC_DATA_DIR=/data",
        "DBT_TARGET_PATH=/tmp/",
        "DBT_LOG_PATH=/tmp/",
        "TMPDIR=/tmp",
        "PATH=/opt/venv/bin:",
    ):
        assert setting in runtime_env, setting
    # The flexsync command sets glibc's arena limit itself (flexsync/core/heap.py).
    assert "MALLOC_ARENA_MAX" not in runtime_env


def test_dockerfile_installs_through_the_tested_script() -> None:
    builder = dockerfile_stages()[0]
    runs = [args for instruction, args in builder if instruction == "RUN"]
    assert any("scripts/install-image.sh deps" in r for r in runs)
    assert any("scripts/install-image.sh project" in r for r in runs)
    copied = " ".join(args for instruction, args in builder if instruction == "COPY")
    assert "requirements.lock" in copied
    script = (REPO_ROOT / "scripts" / "install-image.sh").read_text()
    assert "-m compileall" in script
    assert "dbt\" parse" in script or "dbt parse" in script
    assert "requirements.lock" in script


def test_runtime_image_has_no_package_installer() -> None:
    runtime_runs = " ".join(args for i, args in dockerfile_stages()[-1] if i == "RUN")
    for path in ("/usr/local/bin/pip", "site-packages/pip "):
        assert path in runtime_runs + " ", path
    assert "rm -rf" in runtime_runs


def test_requirements_lock_pins_every_distribution_by_hash() -> None:
    entries = re.split(r"\n(?=[A-Za-z0-9])", (REPO_ROOT / "requirements.lock").read_text())
    pinned = [e for e in entries if "==" in e.split("\n", 1)[0]]
    assert len(pinned) > 50
    unhashed = [e.split()[0] for e in pinned if "--hash=sha256:" not in e]
    assert unhashed == []
    # uv (make setup) and pip (-r) then refuse a download whose hash differs.
    assert "--generate-hashes" in (REPO_ROOT / "requirements.lock").read_text().splitlines()[1]


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = {
        line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "data", "target", "*.duckdb", ".env"} <= ignored


# --- the image's install steps (slow: `make image-check`) -------------------------------


def _uv() -> str:
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.exists() else shutil.which("uv")
    if not found:
        reason = "uv not found (needed by scripts/install-image.sh)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


SOURCE_COMPILED = re.compile(r"^# code object from '?(?P<path>[^']+\.py)'?$", re.MULTILINE)


@pytest.mark.slow
def test_install_image_script_builds_a_working_image_tree(tmp_path: Path) -> None:
    for needed in ("dbt_project.yml", "profiles.yml", "README.md"):
        if not (REPO_ROOT / needed).exists():
            reason = f"{needed} missing: the image cannot be built yet"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(reason)
            pytest.skip(reason)
    venv, app = tmp_path / "venv", tmp_path / "app"
    env = {
        **os.environ,
        "SRC_DIR": str(REPO_ROOT), "VENV": str(venv), "APP_DIR": str(app),
        "UV": _uv(), "PYTHON": sys.executable,
    }
    result = subprocess.run(
        ["sh", str(REPO_ROOT / "scripts" / "install-image.sh"), "all"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    python = venv / "bin" / "python"

    # Runtime dependencies only: no dev tools in the image.
    for dev_tool in ("pytest", "ruff", "mypy", "sqlfluff", "hypothesis"):
        probe = subprocess.run([str(python), "-c", f"import {dev_tool}"], capture_output=True)
        assert probe.returncode != 0, f"{dev_tool} is installed in the image venv"

    # Bytecode is precompiled: nothing is compiled from source at import time.
    modules = ["flexsync.core.config", "flexsync.loaders.pushgateway",
               "flexsync.extract.flex_landing", "dbt.cli.main",
               "dbt.adapters.duckdb", "duckdb", "httpx", "prometheus_client", "defusedxml"]
    if (REPO_ROOT / "flexsync" / "cli.py").exists():
        modules.append("flexsync.cli")
    verbose = subprocess.run(
        [str(python), "-v", "-c", "import " + ", ".join(modules)],
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True, text=True, timeout=120,
    )
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    compiled_from_source = [
        m["path"] for m in SOURCE_COMPILED.finditer(verbose.stderr)
        if m["path"].startswith(str(venv))
    ]
    assert compiled_from_source == []

    # The console script works from the image venv.
    cli = subprocess.run(
        [str(venv / "bin" / "flexsync"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "sync" in cli.stdout

    # The dbt project is there, parsed, without the Python test suite.
    assert (app / "dbt_project.yml").exists()
    assert (app / "target" / "partial_parse.msgpack").exists()
    # And the templates a first night compiles (flexsync/core/dbt_compile_cache.py), readable
    # by the pod's user.
    baked_templates = app / "target" / "flexsync_compiled.marshal"
    assert baked_templates.stat().st_mode & 0o777 == 0o644
    loaded = subprocess.run([str(python), "-c", (
        "import sys; from pathlib import Path; from flexsync.core import dbt_compile_cache as c; "
        "cache = c.CompileCache(Path(sys.argv[1]), c.version_tag()); cache.load(); "
        "print(len(cache.templates), len(cache.schemas))"), str(baked_templates)],
        capture_output=True, text=True, timeout=120)
    templates, schemas = map(int, loaded.stdout.split())
    assert templates > 300 and schemas > 0, loaded.stderr  # the image's own versions
    assert not list(app.rglob("*.py"))

    # The entrypoint seeds the writable target path; dbt then reuses the baked parse.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "flexsync").write_text(
        "#!/bin/sh\n"
        f'echo "$@" > "{tmp_path}/args"\n'
        f'exec "{venv}/bin/dbt" parse --quiet\n'
    )
    (fake_bin / "flexsync").chmod(0o755)
    runtime_tmp = tmp_path / "tmp"
    entry = subprocess.run(
        [str(app / "docker-entrypoint.sh")],
        cwd=app,
        env={
            **os.environ,
            "PATH": f"{fake_bin}:{os.environ['PATH']}",
            "BROKER_SYNC_DATA_DIR": "/data",
            "DBT_PROJECT_DIR": str(app), "DBT_PROFILES_DIR": str(app),
            "DBT_TARGET_PATH": str(runtime_tmp / "dbt" / "target"),
            "DBT_LOG_PATH": str(runtime_tmp / "dbt" / "logs"),
            "FLEXSYNC_BAKED_DBT_TARGET": str(app / "target"),
            "DO_NOT_TRACK": "1",
        },
        capture_output=True, text=True, timeout=300,
    )
    assert entry.returncode == 0, entry.stdout + entry.stderr
    assert (tmp_path / "args").read_text().strip() == "sync"
    perf = json.loads((runtime_tmp / "dbt" / "target" / "perf_info.json").read_text())
    assert perf["parsed_path_count"] == 0, "dbt re-parsed: the baked partial parse was not reused"
    seeded = runtime_tmp / "dbt" / "target" / "flexsync_compiled.marshal"
    assert seeded.read_bytes() == baked_templates.read_bytes()


# --- Terraform (deploy/terraform: the broker-sync stack's twin of cronjob.yaml) ---------

TERRAFORM = DEPLOY / "terraform"
# Nested blocks that are lists in the Kubernetes API (a block may repeat).
_TF_LIST_BLOCKS = {"container": "containers", "env": "env", "volume": "volumes",
                   "volume_mount": "volumeMounts", "rule": "rules", "egress": "egress",
                   "to": "to", "ports": "ports"}
# Attribute names whose camelCase is not the plain conversion.
_TF_NAMES = {"timezone": "timeZone"}


def _unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _camel(name: str) -> str:
    name = _unquote(name)
    if name in _TF_NAMES:
        return _TF_NAMES[name]
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _resolve(value: Any, scope: dict[str, Any]) -> Any:
    """A literal as is; `${var.x}` / `${local.x}` replaced by the default / local value."""
    value = _unquote(value)
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        reference = value[2:-1]
        assert reference in scope, f"unresolvable Terraform expression {value}"
        return scope[reference]
    if isinstance(value, list):
        return [_resolve(v, scope) for v in value]
    if isinstance(value, dict):
        return {_unquote(k): _resolve(v, scope) for k, v in value.items()
                if k not in ("__is_block__", "__comments__")}
    return value


def tf_to_k8s(block: dict[str, Any], scope: dict[str, Any]) -> dict[str, Any]:
    """A Terraform block as the Kubernetes object it produces (snake_case -> camelCase,
    single nested blocks -> objects, repeatable ones -> lists; maps such as labels and
    resources keep their keys)."""
    out: dict[str, Any] = {}
    for key, value in block.items():
        if key in ("__is_block__", "__comments__", "lifecycle"):
            continue
        name = _unquote(key)
        is_block = isinstance(value, list) and value and all(
            isinstance(v, dict) and v.get("__is_block__") for v in value)
        if is_block:
            converted = [tf_to_k8s(v, scope) for v in value]
            if name in _TF_LIST_BLOCKS:
                out[_TF_LIST_BLOCKS[name]] = converted
            else:
                assert len(converted) == 1, f"block {name} repeated"
                out[_camel(name)] = converted[0]
        else:
            out[_camel(name)] = _resolve(value, scope)
    return out


def terraform() -> dict[str, Any]:
    import hcl2

    merged: dict[str, Any] = {}
    for path in sorted(TERRAFORM.glob("*.tf")):
        with path.open() as handle:
            for key, value in hcl2.load(handle).items():
                merged.setdefault(key, []).extend(value)
    return merged


def terraform_scope(parsed: dict[str, Any]) -> dict[str, Any]:
    scope: dict[str, Any] = {}
    for variable in parsed["variable"]:
        for name, body in variable.items():
            scope[f"var.{_unquote(name)}"] = _resolve(body["default"], {})
    for local in parsed["locals"]:
        for name, value in local.items():
            if name not in ("__is_block__", "__comments__"):
                scope[f"local.{name}"] = _resolve(value, scope)
    return scope


def tf_resource(parsed: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    found = [r[f'"{kind}"'][f'"{name}"'] for r in parsed["resource"]
             if f'"{kind}"' in r and f'"{name}"' in r[f'"{kind}"']]
    assert len(found) == 1, f"expected one {kind}.{name}, found {len(found)}"
    result: dict[str, Any] = found[0]
    return result


@pytest.fixture(scope="module")
def tf_parsed() -> dict[str, Any]:
    return terraform()


@pytest.fixture(scope="module")
def tf_cronjob(tf_parsed: dict[str, Any]) -> dict[str, Any]:
    return tf_to_k8s(tf_resource(tf_parsed, "kubernetes_cron_job_v1", "ibkr"),
                     terraform_scope(tf_parsed))


def test_terraform_cronjob_matches_the_yaml_field_for_field(
    tf_cronjob: dict[str, Any], cronjob: dict[str, Any]
) -> None:
    # With the variables' defaults, the Terraform CronJob is the YAML one: every field.
    assert tf_cronjob["spec"] == cronjob["spec"]
    yaml_meta = {k: v for k, v in cronjob["metadata"].items() if k != "annotations"}
    assert tf_cronjob["metadata"] == yaml_meta


def test_terraform_cronjob_named_fields(tf_cronjob: dict[str, Any],
                                        cronjob: dict[str, Any]) -> None:
    # The fields the stack's reviewers look at, one by one (the test above compares all).
    tf_spec, spec = tf_cronjob["spec"], cronjob["spec"]
    for field in ("schedule", "timeZone", "concurrencyPolicy", "startingDeadlineSeconds",
                  "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        assert tf_spec[field] == spec[field], field
    tf_job, job = tf_spec["jobTemplate"]["spec"], spec["jobTemplate"]["spec"]
    for field in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished",
                  "podFailurePolicy"):
        assert tf_job[field] == job[field], field
    tf_pod, pod = tf_job["template"]["spec"], job["template"]["spec"]
    assert tf_pod["securityContext"] == pod["securityContext"]
    assert tf_pod["securityContext"]["fsGroup"] == 10001
    assert tf_pod["volumes"] == pod["volumes"]
    (tf_container,), (container,) = tf_pod["containers"], pod["containers"]
    assert tf_container["resources"] == container["resources"]
    assert tf_container["securityContext"] == container["securityContext"]
    assert tf_container["volumeMounts"] == container["volumeMounts"]
    assert [e["name"] for e in tf_container["env"]] == [e["name"] for e in container["env"]]
    assert secret_refs(tf_container) == secret_refs(container)
    assert {n: r["key"] for n, r in secret_refs(tf_container).items()} == VAULT_KEYS


def test_terraform_comparison_sees_a_difference(tf_parsed: dict[str, Any],
                                                cronjob: dict[str, Any]) -> None:
    # Proves the converter is not blind: one changed secret key breaks the equality.
    resource = json.loads(json.dumps(tf_resource(tf_parsed, "kubernetes_cron_job_v1", "ibkr")))
    container = resource["spec"][0]["job_template"][0]["spec"][0]["template"][0]["spec"][0][
        "container"][0]
    container["env"][0]["value_from"][0]["secret_key_ref"][0]["key"] = '"IBKR_FLEX_TOKEN"'
    assert tf_to_k8s(resource, terraform_scope(tf_parsed))["spec"] != cronjob["spec"]


def test_terraform_variables_and_stack_conventions(tf_parsed: dict[str, Any]) -> None:
    variables = {_unquote(name) for v in tf_parsed["variable"] for name in v}
    assert {"image", "namespace", "data_claim_name", "pushgateway_url"} <= variables
    resource = tf_resource(tf_parsed, "kubernetes_cron_job_v1", "ibkr")
    pod = resource["spec"][0]["job_template"][0]["spec"][0]["template"][0]["spec"][0]
    assert pod["volume"][0]["persistent_volume_claim"][0]["claim_name"] == "${var.data_claim_name}"
    container = pod["container"][0]
    assert container["image"] == "${var.image}"
    plain = {_unquote(e["name"]): e.get("value") for e in container["env"]}
    assert plain["PUSHGATEWAY_URL"] == "${var.pushgateway_url}"
    # Kyverno mutates dns_config: Terraform must not fight it.
    (lifecycle,) = resource["lifecycle"]
    assert [_unquote(x) for x in lifecycle["ignore_changes"]] == [
        "${spec[0].job_template[0].spec[0].template[0].spec[0].dns_config}"]


def test_terraform_prometheus_rule_is_built_from_the_rules_file(
    tf_parsed: dict[str, Any]
) -> None:
    manifest = tf_resource(tf_parsed, "kubernetes_manifest", "ibkr_rules")["manifest"]
    assert _unquote(manifest["kind"]) == "PrometheusRule"
    assert _unquote(manifest["apiVersion"]) == "monitoring.coreos.com/v1"
    # One home for the rules: the file promtool tests, decoded at plan time.
    assert manifest["spec"] == '${yamldecode(file("${path.module}/../prometheus-rules.yaml"))}'
    assert (TERRAFORM / ".." / "prometheus-rules.yaml").resolve() == (
        DEPLOY / "prometheus-rules.yaml")
    assert "groups" in yaml.safe_load((DEPLOY / "prometheus-rules.yaml").read_text())


def test_terraform_network_policy_matches_the_yaml(tf_parsed: dict[str, Any]) -> None:
    policy = tf_to_k8s(tf_resource(tf_parsed, "kubernetes_network_policy_v1", "ibkr_egress"),
                       terraform_scope(tf_parsed))
    yaml_policy = only("NetworkPolicy")
    assert policy["spec"] == yaml_policy["spec"]
    assert policy["metadata"] == yaml_policy["metadata"]


def test_network_policy_allows_only_what_the_job_needs(pod_spec: dict[str, Any]) -> None:
    policy = only("NetworkPolicy")["spec"]
    pod_labels = only("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in policy
    ports = sorted((p["protocol"], p["port"]) for rule in policy["egress"]
                   for p in rule["ports"])
    assert ports == [("TCP", 53), ("TCP", 443), ("TCP", 8088), ("TCP", 9091), ("UDP", 53)]
    # The internet only over https, never the cluster's private ranges.
    (internet,) = [r for r in policy["egress"] if "ipBlock" in r["to"][0]]
    assert internet["ports"] == [{"protocol": "TCP", "port": 443}]
    assert "10.0.0.0/8" in internet["to"][0]["ipBlock"]["except"]


def test_terraform_labels_the_namespace_restricted(tf_parsed: dict[str, Any]) -> None:
    labels = _resolve(tf_resource(tf_parsed, "kubernetes_labels", "namespace_pod_security")[
        "labels"], {})
    assert labels == only("Namespace")["metadata"]["labels"]


@pytest.mark.parametrize("name", ["main.tf", "variables.tf", "versions.tf"])
def test_terraform_is_formatted_as_terraform_fmt_would(name: str) -> None:
    from tests.terraform_fmt import fmt_problems

    assert fmt_problems((TERRAFORM / name).read_text()) == []


def test_terraform_fmt_checker_catches_misalignment() -> None:
    from tests.terraform_fmt import fmt_problems

    text = (TERRAFORM / "main.tf").read_text()
    assert fmt_problems(text.replace("    namespace = var.namespace\n",
                                     "    namespace =  var.namespace\n"))
    assert fmt_problems(text.replace('    name      = "broker-sync-ibkr"\n',
                                     '    name = "broker-sync-ibkr"\n', 1))
    assert fmt_problems(text.replace("\n  spec {\n", "\n   spec {\n", 1))
    assert fmt_problems(text + "\n")
