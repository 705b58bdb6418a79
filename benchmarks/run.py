"""`make bench`: speed and memory of flexsync on this machine, written to RESULTS.md.

    .venv/bin/python benchmarks/run.py [--reps 3] [--only daily,growth,backfill,loader]

Sections (see benchmarks/README.md for what each measures and why):
- daily    `flexsync sync --flex-file` of a 90-day window (≈300 trades, ≈400 cash rows,
           ≈55 positions) against the fake Wealthfolio and a real Pushgateway: once on an
           empty warehouse (everything posted) and in steady state (yesterday's run done);
- growth   the same steady-state night after 1 night, 1, 2 and 5 years of nightly
           history (benchmarks/history.py builds it with SQL), ratio to 1 night;
- backfill `flexsync extract` + `flexsync transform` of a ≈110 MB 10-year statement,
           next to `ibflex.parser.parse` of the same bytes, alternated in one run;
- loader   ≈10,000 activities posted by `flexsync load` to the fake at loopback.

Medians of --reps runs; every process's peak RSS (wait4) and the process tree's peak.
Generated inputs and history warehouses are cached under benchmarks/work/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb
import psutil

from benchmarks import generate_flex, history, measure
from benchmarks.measure import median, mib
from benchmarks.paths import FLEXSYNC, REPO, WORK
from benchmarks.services import WealthfolioSession, services

TODAY = dt.date(2025, 12, 31)  # the synthetic "tonight": its window is [TODAY-89, TODAY]
SEED = 7
GROWTH_NIGHTS = {"1 night": 1, "1 year": 365, "2 years": 730, "5 years": 1825}
LOADER_DAYS = 1300  # the active profile maps ≈7.7 activities a day: ≈10,000
TARGETS = {
    "daily_wall": 8.0, "rss_mib": 256.0, "growth_ratio": 1.25, "ibflex_ratio": 5.0,
    "loader_rate": 200.0,
}


@dataclass
class Run:
    wall: float
    max_rss: int
    tree_rss: int
    stages: dict[str, float] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    processes: dict[str, int] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)
    cpu: float = 0.0  # user + system seconds (GNU time)


def _med(runs: list[Run], get: Callable[[Run], float]) -> float:
    return median([get(r) for r in runs])


# ------------------------------------------------------------------------- inputs
def _source_hash(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" not in file.parts:
                digest.update(file.read_bytes())
    return digest.hexdigest()[:10]


GENERATOR_HASH = _source_hash(REPO / "benchmarks" / "generate_flex.py")


def flex_file(name: str, start: dt.date, end: dt.date, profile: str = "active") -> Path:
    path = WORK / "files" / f"{name}-{GENERATOR_HASH}.xml"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        generate_flex.write_statement(tmp, start, end, SEED, generate_flex.PROFILES[profile])
        tmp.rename(path)
    return path


def history_template(nights: int) -> Path:
    key = _source_hash(REPO / "benchmarks" / "generate_flex.py",
                       REPO / "benchmarks" / "history.py", REPO / "models", REPO / "macros",
                       REPO / "seeds", REPO / "flexsync" / "core" / "warehouse.py",
                       REPO / "flexsync" / "extract" / "wealthfolio_snapshot.py",
                       REPO / "dbt_project.yml")
    root = WORK / f"templates-{key}"
    for stale in WORK.glob("templates-*"):  # built from other sources: gigabytes each
        if stale != root:
            shutil.rmtree(stale, ignore_errors=True)
    return history.build(root, nights, TODAY, SEED)


# ------------------------------------------------------------------------- helpers
def _last_run(data_dir: Path, command: str) -> tuple[dict[str, float], dict[str, Any]]:
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute(
            "select stage_durations_json, counts_json from sync.runs where command = ? "
            "order by started_at desc limit 1", [command]).fetchall()
    if not rows:
        return {}, {}
    return json.loads(rows[0][0] or "{}"), json.loads(rows[0][1] or "{}")


def _fresh_dir(name: str, template: Path | None = None) -> Path:
    path = WORK / "runs" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    if template is not None:
        shutil.copy2(template / "warehouse.duckdb", path / "warehouse.duckdb")
    return path


COMPILED_TEMPLATES = "flexsync_compiled.marshal"  # flexsync/core/dbt_compile_cache.py
_baked_templates: list[Path] = []


def baked_templates(env: dict[str, str]) -> Path:
    """What the image bakes beside the parse (scripts/install-image.sh): the templates dbt
    compiles in a first and an ordinary night (scripts/bake-compiled-templates.sh). Once
    per bench: they depend on the code, not on the data."""
    if not _baked_templates:
        out = WORK / "runs" / "bake-templates"
        shutil.rmtree(out, ignore_errors=True)
        measure.run(["sh", str(REPO / "scripts" / "bake-compiled-templates.sh"), FLEXSYNC,
                     str(REPO), str(out)], env, cwd=REPO).check()
        _baked_templates.append(out / COMPILED_TEMPLATES)
    return _baked_templates[0]


def bake_dbt(data_dir: Path, env: dict[str, str]) -> dict[str, str]:
    """What the image does at build time (scripts/install-image.sh): `dbt parse` with the
    runtime profile, so every run starts from a baked partial-parse state, and the
    compiled templates beside it."""
    baked = data_dir / "dbt-baked"
    if not (baked / "partial_parse.msgpack").exists():
        measure.run([str(Path(FLEXSYNC).parent / "dbt"), "parse", "--quiet", "--project-dir",
                     str(REPO), "--profiles-dir", str(REPO)],
                    {**env, "DBT_TARGET_PATH": str(baked)}, cwd=REPO).check()
    if not (baked / COMPILED_TEMPLATES).exists():
        shutil.copy2(baked_templates(env), baked / COMPILED_TEMPLATES)
    return env


def _measured(argv: list[str], env: dict[str, str], data_dir: Path, command: str,
              timeout: float = 1800) -> Run:
    if "DBT_TARGET_PATH" in env:  # each pod starts from the image's baked state
        target = Path(env["DBT_TARGET_PATH"])
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(data_dir / "dbt-baked", target)
    result = measure.run(argv, env, cwd=REPO, timeout=timeout).check()
    stages, counts = _last_run(data_dir, command)
    return Run(result.wall, result.max_process_rss, result.tree_rss_peak, stages, counts,
               result.processes, cpu=result.cpu)


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# ------------------------------------------------------------------------- benches
def window_file(night: dt.date) -> Path:
    return flex_file(f"window-{night.isoformat()}", night - dt.timedelta(days=89), night)


def sync_nights(name: str, template: Path | None, nights: int,
                timeout: float = 1800, statements: list[Path] | None = None) -> list[Run]:
    """`nights` consecutive nightly syncs from TODAY on (or one sync of each of
    `statements`), on one copy of `template` (or an empty warehouse) with one fake
    Wealthfolio: steady state, as the CronJob runs.
    A night longer than `timeout` is stopped and recorded as that long (aborted)."""
    files = statements or [window_file(TODAY + dt.timedelta(days=offset))
                           for offset in range(nights)]
    data_dir = _fresh_dir(name, template)
    runs = []
    with services(data_dir / "logs") as (wf, pg):
        if template is not None:
            payloads = json.loads((template / "payloads.json").read_text())
            session = WealthfolioSession(wf.url)
            session.bulk_create(payloads)
            history.adopt_wealthfolio(template, data_dir / "warehouse.duckdb",
                                      session.search_all(history.WF_ACCOUNT))
        env = bake_dbt(data_dir, history.base_env(data_dir, wf.url, pg.url if pg else None))
        for night, statement in enumerate(files, 1):
            log(f"{name}: night {night}/{len(files)}")
            try:
                runs.append(_measured([FLEXSYNC, "sync", "--flex-file", str(statement)], env,
                                      data_dir, "sync", timeout))
            except TimeoutError:
                log(f"{name}: stopped after {timeout:.0f} s")
                runs.append(Run(timeout, 0, 0, extra={"aborted": 1.0}))
                break
    _drop_warehouses(data_dir)
    return runs


def _drop_warehouses(data_dir: Path) -> None:
    """Keep the logs of a finished case, not its (up to 10 GB) warehouse copies."""
    for path in data_dir.glob("*.duckdb*"):
        if path.is_file():
            path.unlink()


def bench_daily(reps: int) -> dict[str, list[Run]]:
    first = [sync_nights(f"daily-empty-{rep}", None, 1)[0] for rep in range(reps)]
    steady = sync_nights("daily-steady", history_template(1), reps)
    return {"first run (empty warehouse)": first, "steady state (yesterday synced)": steady}


def bench_growth(reps: int, daily_steady: list[Run] | None,
                 night_timeout: float) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for label, nights in GROWTH_NIGHTS.items():
        log(f"growth: history of {label} ({nights} nights)")
        template = history_template(nights)
        if label == "1 night" and daily_steady:
            out[label] = daily_steady  # the daily bench ran exactly this
        else:
            # A night of 5 years takes ≈9 s: consecutive nights, a median like the others.
            out[label] = sync_nights(f"growth-{nights}", template, reps, night_timeout)
        sizes = history.size_summary(template / "warehouse.duckdb")
        out[label][0].extra.update(
            raw_ibkr_rows=sum(v for k, v in sizes.items() if k.startswith("raw_ibkr.")),
            wf_snapshot_rows=sizes.get("raw_wealthfolio.activities", 0),
            warehouse_mb=(template / "warehouse.duckdb").stat().st_size / 1e6)
    return out


IBFLEX_SNIPPET = (
    "import sys, time, warnings\n"
    "from ibflex import parser\n"
    "data = open(sys.argv[1], 'rb').read()\n"
    "start = time.perf_counter()\n"
    "with warnings.catch_warnings():\n"
    "    warnings.simplefilter('ignore')\n"
    "    response = parser.parse(data)\n"
    "print(time.perf_counter() - start)\n"
)


def bench_backfill(reps: int) -> dict[str, Any]:
    path = flex_file("backfill", TODAY - dt.timedelta(days=3651), TODAY, profile="backfill")
    size = path.stat().st_size
    extract_runs: list[Run] = []
    ibflex_runs: list[Run] = []
    landing_runs: list[Run] = []
    startup_runs: list[Run] = []  # Python started and the CLI imported: any command's least
    transform_runs: list[Run] = []
    for rep in range(reps):
        log(f"backfill rep {rep + 1}/{reps}: flexsync extract")
        data_dir = _fresh_dir(f"backfill-{rep}")
        env = bake_dbt(data_dir, history.base_env(data_dir))
        extract_runs.append(_measured([FLEXSYNC, "extract", "--flex-file", str(path)], env,
                                      data_dir, "extract"))
        log(f"backfill rep {rep + 1}/{reps}: ibflex.parser.parse")
        result = measure.run([sys.executable, "-c", IBFLEX_SNIPPET, str(path)]).check()
        ibflex_runs.append(Run(result.wall, result.max_process_rss, result.tree_rss_peak,
                               extra={"parse": float(result.stdout.strip())}, cpu=result.cpu))
        log(f"backfill rep {rep + 1}/{reps}: the landing alone (benchmarks/landing_alone.py)")
        landing_dir = _fresh_dir("backfill-landing-alone")
        script = REPO / "benchmarks" / "landing_alone.py"
        result = measure.run([sys.executable, str(script), str(path), str(landing_dir)],
                             env=history.base_env(landing_dir)).check()
        landing_runs.append(Run(result.wall, result.max_process_rss, result.tree_rss_peak,
                                extra={"landing": float(result.stdout.strip())},
                                cpu=result.cpu))
        shutil.rmtree(landing_dir)
        log(f"backfill rep {rep + 1}/{reps}: the command's bare start-up (import flexsync.cli)")
        result = measure.run([sys.executable, "-c", "import flexsync.cli"],
                             env=history.base_env(data_dir)).check()
        startup_runs.append(Run(result.wall, result.max_process_rss, result.tree_rss_peak,
                                cpu=result.cpu))
        log(f"backfill rep {rep + 1}/{reps}: flexsync transform")
        transform_runs.append(_measured([FLEXSYNC, "transform"], env, data_dir, "transform"))
        if rep < reps - 1:
            _drop_warehouses(data_dir)
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        rows = dict(con.execute("select table_name, estimated_size from duckdb_tables() "
                                "where schema_name = 'raw_ibkr'").fetchall())
        fct = con.execute("select count(*) from marts.fct_activities").fetchall()[0][0]
    _drop_warehouses(data_dir)
    log("backfill: the same statement as one first `flexsync sync` (everything posted)")
    return {"size": size, "extract": extract_runs, "ibflex": ibflex_runs,
            "landing": landing_runs, "startup": startup_runs, "transform": transform_runs,
            "raw_rows": rows, "fct_rows": fct,
            # A first sync of the whole statement: build from scratch, post every
            # activity, snapshot and drift — once (it takes a minute).
            "sync": sync_nights("backfill-sync", None, 1, statements=[path])}


def bench_loader(reps: int) -> list[Run]:
    path = flex_file("loader", TODAY - dt.timedelta(days=LOADER_DAYS - 1), TODAY)
    prepared = WORK / f"loader-prepared-{GENERATOR_HASH}"
    if not (prepared / "done").exists():
        log("loader: landing + transforming the statement to post")
        shutil.rmtree(prepared, ignore_errors=True)
        prepared.mkdir(parents=True)
        env = history.base_env(prepared)
        measure.run([FLEXSYNC, "extract", "--flex-file", str(path)], env).check()
        measure.run([FLEXSYNC, "transform"], env).check()
        (prepared / "done").write_text("ok\n")
    runs = []
    for rep in range(reps):
        log(f"loader rep {rep + 1}/{reps}")
        data_dir = _fresh_dir(f"loader-{rep}", prepared)
        with services(data_dir / "logs") as (wf, pg):
            env = bake_dbt(data_dir, history.base_env(data_dir, wf.url, pg.url if pg else None))
            runs.append(_measured([FLEXSYNC, "load"], env, data_dir, "load"))
        _drop_warehouses(data_dir)
    return runs


# ------------------------------------------------------------------------- report
def machine() -> dict[str, str]:
    from importlib.metadata import version

    cpu = platform.processor()
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {name: version(name) for name in
                ("duckdb", "dbt-core", "dbt-duckdb", "pyarrow", "ibflex", "defusedxml")}
    return {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }


def _pod_memory(run: Run) -> int:
    """What the pod's limit counts: the process tree's PSS (a page shared by the run's
    process and its forked children once), or the largest process if that is more."""
    return max(run.max_rss, run.tree_rss)


def _stage_text(runs: list[Run]) -> str:
    names = list(dict.fromkeys(k for r in runs for k in r.stages))
    return ", ".join(f"{n} {median([r.stages.get(n, 0.0) for r in runs]):.2f}" for n in names)


REFERENCE_PARSE_SECONDS = 8.8  # ibflex parse() of the backfill file, 2026-11-22 machine


def _rss_verdict(rss_mib: float) -> str:
    return _verdict(rss_mib <= TARGETS["rss_mib"], f"{rss_mib - TARGETS['rss_mib']:+.0f} MiB")


def _verdict(ok: bool, text: str) -> str:
    return f"**met** ({text})" if ok else f"**missed** ({text})"


def report(results: dict[str, Any], info: dict[str, str], reps: int, load: tuple[str, str],
           elapsed: float) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `make bench` (benchmarks/run.py) on {info['date']}, medians of {reps} "
        f"run(s), {elapsed / 60:.1f} min in all.",
        "",
        f"- machine: {info['cpu']}, {info['ram']} RAM, {info['os']}",
        f"- Python {info['python']}; {info['versions']}",
        f"- load average at start / end: {load[0]} / {load[1]} (other work shares these cores: "
        "compare the ratios more than the absolute seconds)",
        "",
        "Peak RSS: `max process` is the kernel's peak of the largest single process (GNU "
        "time %M); "
        "`tree PSS` is the largest sampled sum of PSS over the process tree (a page shared "
        "by the run and its forked stage child counts once: what a pod's memory limit "
        "counts). Stage seconds come from `sync.runs.stage_durations_json`.",
        "",
    ]
    verdicts: list[tuple[str, str, str, str]] = []  # target, measured, verdict, why if missed
    daily = results.get("daily")
    if daily:
        lines += ["## Daily sync (90-day window, fake Wealthfolio + Pushgateway)", "",
                  "| case | wall s | CPU s | max process RSS MiB | tree PSS MiB | posted | "
                  "stages (s) |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for label, runs in daily.items():
            lines.append(
                f"| {label} | {_med(runs, lambda r: r.wall):.2f} | "
                f"{_med(runs, lambda r: r.cpu):.2f} | "
                f"{mib(_med(runs, lambda r: r.max_rss)):.0f} | "
                f"{mib(_med(runs, lambda r: r.tree_rss)):.0f} | "
                f"{runs[0].counts.get('posted', '?')} | {_stage_text(runs)} |")
        lines.append("")
        for label, runs in daily.items():
            wall = _med(runs, lambda r: r.wall)
            rss = mib(max(_pod_memory(r) for r in runs))
            dbt = _med(runs, lambda r: r.stages.get("transform", 0.0) + r.stages.get("drift", 0.0))
            outside = _med(runs, lambda r: r.wall - sum(r.stages.values()))
            verdicts.append((f"daily sync wall ≤ {TARGETS['daily_wall']:.0f} s ({label})",
                             f"{wall:.2f} s",
                             _verdict(wall <= TARGETS["daily_wall"],
                                      f"{wall / TARGETS['daily_wall']:.2f}× the budget"),
                             f"dbt's two builds (transform + drift) are {dbt:.1f} s of it, "
                             f"{outside:.1f} s is outside the stages (start-up, waiting for "
                             "dbt's import and parse, exit); see the machine yardstick above"))
            verdicts.append((f"daily sync: the pod ≤ 256 MiB ({label})",
                             f"{rss:.0f} MiB (worst run)",
                             _verdict(rss <= TARGETS["rss_mib"],
                                      f"{rss - TARGETS['rss_mib']:+.0f} MiB"),
                             "the run's process, the dbt worker and one stage child at once"))
    growth = results.get("growth")
    if growth:
        base = _med(growth["1 night"], lambda r: r.wall)
        lines += ["## Growth: the same night after N nights of history", "",
                  "| history | raw_ibkr rows | WF snapshot rows | warehouse MB | wall s | "
                  "CPU s | ratio | max process RSS MiB | tree PSS MiB | stages (s) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for label, runs in growth.items():
            wall = _med(runs, lambda r: r.wall)
            extra = runs[0].extra
            stopped = any(r.extra.get("aborted") for r in runs)
            lines.append(
                f"| {label} | {extra.get('raw_ibkr_rows', 0):,.0f} | "
                f"{extra.get('wf_snapshot_rows', 0):,.0f} | {extra.get('warehouse_mb', 0):,.0f} | "
                f"{'> ' if stopped else ''}{wall:.2f} | {_med(runs, lambda r: r.cpu):.2f} | "
                f"{'> ' if stopped else ''}"
                f"{wall / base:.2f} | "
                f"{'—' if stopped else format(mib(_med(runs, lambda r: r.max_rss)), '.0f')} | "
                f"{'—' if stopped else format(mib(_med(runs, lambda r: r.tree_rss)), '.0f')} | "
                f"{_stage_text(runs) if not stopped else 'stopped at the night timeout'} "
                f"({len(runs)} night(s)) |")
        lines.append("")
        growing = ("what grows with the history: the Wealthfolio snapshot before posting "
                   "(every activity), the intermediate tables rebuilt from every staged row "
                   "(one dbt thread above 1,000,000 raw rows), the analytics copy; see the "
                   "growth table's stages")
        # Issue 17 sets the ratio at 2 years of history, and in its title the nightly sync
        # in 8 s with 5 years: our own check (its row says so). A ratio at 5 years would
        # grow as the 1-night base gets faster, whatever 5 years cost.
        ratio = _med(growth["2 years"], lambda r: r.wall) / base
        verdicts.append(("daily with 2 years of history ≤ 1.25× 1 night", f"{ratio:.2f}×",
                         _verdict(ratio <= TARGETS["growth_ratio"],
                                  f"{ratio / TARGETS['growth_ratio']:.2f}× the allowance"),
                         growing))
        wall5 = _med(growth["5 years"], lambda r: r.wall)
        verdicts.append((f"daily with 5 years of history ≤ {TARGETS['daily_wall']:.0f} s "
                         "(our own check, from issue 17's title)",
                         f"{wall5:.2f} s ({wall5 / base:.2f}× 1 night)",
                         _verdict(wall5 <= TARGETS["daily_wall"],
                                  f"{wall5 / TARGETS['daily_wall']:.2f}× the budget"),
                         growing))
        runs5 = [r for r in growth["5 years"] if not r.extra.get("aborted")]
        if runs5:
            rss = mib(max(_pod_memory(r) for r in runs5))
            verdicts.append(("daily with 5 years of history: the pod ≤ 256 MiB",
                             f"{rss:.0f} MiB (worst run)", _rss_verdict(rss),
                             "the measured night also builds the incremental staging from "
                             "every landed row (the history starts without dbt's tables), "
                             "a one-off a real night never pays; see benchmarks/README.md"))
    backfill = results.get("backfill")
    if backfill:
        size_mb = backfill["size"] / 1e6
        ext, ibf, tr = backfill["extract"], backfill["ibflex"], backfill["transform"]
        ext_wall = _med(ext, lambda r: r.wall)
        ext_stage = _med(ext, lambda r: r.stages.get("extract", r.wall))
        ibf_parse = _med(ibf, lambda r: r.extra["parse"])
        ibf_wall = _med(ibf, lambda r: r.wall)
        alone = backfill["landing"]
        alone_landing = _med(alone, lambda r: r.extra["landing"])
        raw = backfill["raw_rows"]
        lines += [
            f"## Backfill: a {size_mb:.0f} MB 10-year statement", "",
            f"Rows: {raw.get('trades', 0):,} trades-section rows (executions + orders), "
            f"{raw.get('cash_transactions', 0):,} cash transactions, "
            f"{raw.get('open_positions', 0):,} positions; {backfill['fct_rows']:,} activities "
            "mapped. Full attribute sets (85 per trade), as a real 'select all' Flex query.", "",
            "| step | wall s | CPU s | MB/s | max process RSS MiB | tree PSS MiB | note |",
            "|---|---:|---:|---:|---:|---:|---|",
            f"| `flexsync extract` (process) | {ext_wall:.2f} | {_med(ext, lambda r: r.cpu):.2f} | "
            f"{size_mb / ext_wall:.0f} | "
            f"{mib(_med(ext, lambda r: r.max_rss)):.0f} | "
            f"{mib(_med(ext, lambda r: r.tree_rss)):.0f} | extract stage {ext_stage:.2f} s |",
            f"| `ibflex.parser.parse` (process) | {ibf_wall:.2f} | "
            f"{_med(ibf, lambda r: r.cpu):.2f} | "
            f"{size_mb / ibf_wall:.0f} | "
            f"{mib(_med(ibf, lambda r: r.max_rss)):.0f} | | parse() alone {ibf_parse:.2f} s |",
            "| the landing alone (`benchmarks/landing_alone.py`) | "
            f"{_med(alone, lambda r: r.wall):.2f} | "
            f"{_med(alone, lambda r: r.cpu):.2f} | | "
            f"{mib(_med(alone, lambda r: r.max_rss)):.0f} | | open, land, commit, close "
            f"{alone_landing:.2f} s: `flexsync extract` without its start-up |",
            "| the command's bare start-up (`python -c 'import flexsync.cli'`) | "
            f"{_med(backfill['startup'], lambda r: r.wall):.2f} | "
            f"{_med(backfill['startup'], lambda r: r.cpu):.2f} | | "
            f"{mib(_med(backfill['startup'], lambda r: r.max_rss)):.0f} | | what every "
            "command pays before its own work |",
            f"| `flexsync transform` (process) | {_med(tr, lambda r: r.wall):.2f} | "
            f"{_med(tr, lambda r: r.cpu):.2f} | | "
            f"{mib(_med(tr, lambda r: r.max_rss)):.0f} | "
            f"{mib(_med(tr, lambda r: r.tree_rss)):.0f} | dbt build, stages "
            f"{_stage_text(tr)} |",
        ]
        one = backfill["sync"]
        lines += [
            f"| `flexsync sync` (first sync, one run) | {_med(one, lambda r: r.wall):.2f} | "
            f"{_med(one, lambda r: r.cpu):.2f} | | {mib(_med(one, lambda r: r.max_rss)):.0f} | "
            f"{mib(_med(one, lambda r: r.tree_rss)):.0f} | posted "
            f"{one[0].counts.get('posted', 0):,.0f}; stages {_stage_text(one)} |",
            "",
        ]
        ratio = ibf_parse / ext_wall
        needed = ibf_parse / TARGETS["ibflex_ratio"]
        startup = _med(backfill["startup"], lambda r: r.wall)
        least = alone_landing + startup
        floor = (f"5× needs the process in ≤ {needed:.2f} s; the landing alone, without the "
                 f"command's start-up, took {alone_landing:.2f} s in this run"
                 + (" — over it before any start-up. " if alone_landing > needed else
                    f", and the command's bare start-up (Python and `import flexsync.cli`) "
                    f"{startup:.2f} s: {least:.2f} s at the least"
                    + (" — over it. " if least > needed else ". ")))
        verdicts.append(("backfill extract ≥ 5× faster than ibflex.parser.parse",
                         f"{ratio:.1f}× (parse() {ibf_parse:.1f} s vs the whole extract "
                         f"process {ext_wall:.1f} s; {ibf_parse / ext_stage:.1f}× vs its "
                         f"landing stage {ext_stage:.1f} s)",
                         _verdict(ratio >= TARGETS["ibflex_ratio"],
                                  f"{ratio / TARGETS['ibflex_ratio']:.2f} of the target"),
                         floor + "Why: two cores and one GIL: the parse (expat ≈0.85 s, "
                         "benchmarks/parse_floor.py) holds the GIL that DuckDB's Python "
                         "client takes at every step of an insert, so the inserts take ≈1.5 s "
                         "beside it "
                         "(1.1 s alone); start-up (≈0.4 s) and the commit (≈0.5 s) are "
                         "serial. A two-process landing measured ≈0.2–0.4 s less, DuckDB "
                         "splitting the lines with expat's check in a process of its own "
                         "≈0.1–0.2 s less (the same ≈4 s of CPU for 111 MB): still short "
                         "(benchmarks/README.md, sessions 11, 13 and 14)"))
        # The pod counts the run's process and its stage child together (tree PSS).
        rss = mib(max(_pod_memory(r) for r in ext))
        verdicts.append(("backfill extract: the pod ≤ 256 MiB", f"{rss:.0f} MiB (worst run)",
                         _rss_verdict(rss), "the landing child (pyarrow, expat, DuckDB's "
                         "landing limit) beside the run's own ≈45–57 MiB"))
        rss = mib(max(_pod_memory(r) for r in tr))
        verdicts.append(("backfill transform: the pod ≤ 256 MiB",
                         f"{rss:.0f} MiB (worst run)",
                         _rss_verdict(rss),
                         "the dbt child (≈178 MiB once dbt has parsed, DuckDB's 64MB limit "
                         "and ≈20 MiB outside it; 48MB fails int_ibkr__symbols_canonicalised) "
                         "beside the run's own ≈45–57 MiB; benchmarks/README.md, session 9"))
        rss = mib(max(_pod_memory(r) for r in backfill["sync"]))
        verdicts.append(("backfill as one first sync: the pod ≤ 256 MiB",
                         f"{rss:.0f} MiB", _rss_verdict(rss),
                         "the dbt worker's build from scratch or the drift child's "
                         "after posting (dbt's heap and DuckDB's 64MB) beside the run's "
                         "own; benchmarks/README.md, session 10"))
    loader = results.get("loader")
    if loader:
        rates = [r.counts.get("posted", 0) / r.stages["load"] for r in loader
                 if r.stages.get("load")]
        rate = median(rates)
        lines += ["## Loader: activities posted to the fake Wealthfolio (loopback)", "",
                  "| posted | load stage s | activities/s | `flexsync load` wall s | "
                  "max process RSS MiB |", "|---:|---:|---:|---:|---:|",
                  f"| {loader[0].counts.get('posted', 0):,} | "
                  f"{_med(loader, lambda r: r.stages.get('load', 0.0)):.1f} | {rate:.0f} | "
                  f"{_med(loader, lambda r: r.wall):.1f} | "
                  f"{mib(_med(loader, lambda r: r.max_rss)):.0f} |", ""]
        verdicts.append(("loader ≥ 200 activities/s", f"{rate:.0f}/s",
                         _verdict(rate >= TARGETS["loader_rate"],
                                  f"{rate / TARGETS['loader_rate']:.1f}× the target"),
                         "one POST and one durable ledger row per activity"))
    if backfill:
        # The same fixed work on every machine: how this one compares with the one the
        # targets were first met on (2026-11-22: parse() 8.8 s, steady night 6.6 s).
        lines[7:7] = [f"- machine yardstick: `ibflex.parser.parse` of the backfill file "
                      f"took {ibf_parse:.1f} s here, {ibf_parse / REFERENCE_PARSE_SECONDS:.2f}× "
                      f"the {REFERENCE_PARSE_SECONDS} s of the 2026-11-22 machine (where the "
                      "steady night took 6.6 s)"]
    lines += ["## Targets", "", "| target | measured | verdict | why (when missed) |",
              "|---|---|---|---|"]
    lines += [f"| {t} | {m} | {v} | {'' if v.startswith('**met**') else w} |"
              for t, m, v, w in verdicts]
    lines += ["", "Why, and what to change: benchmarks/README.md (Performance).", ""]
    return "\n".join(lines)


def compile_like_the_image() -> None:
    """Byte-compile the venv and the project, as the image ships them
    (scripts/install-image.sh). Where PYTHONDONTWRITEBYTECODE is set (this workplace sets
    it) a venv has no .pyc at all, and every measured process would compile dbt, DuckDB's
    and pydantic's modules from source again: seconds a night that no pod pays. Timestamp
    checked, so an edited module is recompiled rather than served stale."""
    paths = [sysconfig.get_paths()["purelib"], *(str(REPO / d) for d in
                                                  ("flexsync", "extract", "loaders"))]
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", *paths],
                   check=True, stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", default="daily,growth,backfill,loader")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    parser.add_argument("--night-timeout", type=float, default=120,
                        help="stop a growth night after this many seconds (default 120: "
                        "far past the 1.25x allowance already)")
    args = parser.parse_args(argv)
    sections = set(args.only.split(","))
    started = time.monotonic()
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    info = machine()
    WORK.mkdir(parents=True, exist_ok=True)
    log("byte-compiling the venv and the project, as the image does")
    compile_like_the_image()
    results: dict[str, Any] = {}
    if "daily" in sections:
        results["daily"] = bench_daily(args.reps)
    if "growth" in sections:
        steady = results.get("daily", {}).get("steady state (yesterday synced)")
        results["growth"] = bench_growth(args.reps, steady, args.night_timeout)
    if "backfill" in sections:
        results["backfill"] = bench_backfill(args.reps)
    if "loader" in sections:
        results["loader"] = bench_loader(args.reps)
    load_end = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = report(results, info, args.reps, (load_start, load_end), time.monotonic() - started)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
