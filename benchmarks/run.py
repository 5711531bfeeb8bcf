"""Benchmark runner: the pipeline stage by stage, the bare-scan floor, a no-change rerun and the peers.

    python -m benchmarks.run --scale 100000        # what `make bench SCALE=100000` runs

1. Generates (or reuses) `benchmarks/data/<scale>/` (benchmarks.generate).
2. Runs every stage of `benchmarks.stages.STAGES` in its own process against a fresh warehouse in
   `benchmarks/work/<scale>/`, so each stage's peak RSS is its own: wall seconds, rows, rows/s,
   responses/s, peak RSS. Stages not built yet are listed as such.
3. The floor: a bare DuckDB `read_json` scan (and unnest) of the same QuestionnaireResponse file.
4. A no-change incremental run: every stage again on the same warehouse and the same files.
   At scales up to `DAGSTER_RERUN_MAX_SCALE`, also the reruns through Dagster
   (`benchmarks.dagster_rerun`: first, no-change and one-new-day materialisations).
5. The peers (fhir4ds-v2, fhiry, naive pandas) on the same file, with the peers' own interpreter.
6. Merges the numbers into `benchmarks/results/latest.json` (one entry per scale, plus ratios and
   the targets' status) and rewrites the generated part of `docs/benchmarks.md`.
"""

from __future__ import annotations

import argparse
import itertools
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PEERS_INSTALL_LOG,
    PEERS_PYTHON,
    REPO_ROOT,
    RESULTS_FILE,
    WORK_DIR,
    machine,
    now_iso,
    python_env,
    rate,
    read_json,
    write_json,
)
from benchmarks.generate import ScaleConfig, ensure_dataset, folder_for
from benchmarks.stages import FLOOR, STAGES

DOCS_FILE = REPO_ROOT / "docs" / "benchmarks.md"
DOCS_BEGIN = (
    "<!-- bench:generated:begin (written by python -m benchmarks.run; edit outside these markers) -->"
)
DOCS_END = "<!-- bench:generated:end -->"
CHART_FILE = REPO_ROOT / "docs" / "benchmarks-scale.svg"
ONE_MILLION = 1_000_000
# Slow peers run on the first N responses; their rates are reported with the sample size.
PEER_CAPS = {"fhir4ds": 200_000, "pandas": 200_000, "fhiry": 2_000}
# The Dagster rerun bench materialises the whole graph three times in one process: run at these scales.
DAGSTER_RERUN_MAX_SCALE = 100_000
STAGE_TIMEOUT_S = 3 * 3600  # a bound, not an expectation: a hung stage must not hang the run


def run_child(cmd: list[str], out: Path, label: str) -> dict[str, Any]:
    """Run a benchmark child process that writes `out`; add its process wall time (imports included)."""
    out.unlink(missing_ok=True)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, cwd=REPO_ROOT, env=python_env(), capture_output=True, text=True, timeout=STAGE_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return {"stage": label, "status": "error", "error": f"timed out after {STAGE_TIMEOUT_S}s"}
    wall = time.monotonic() - t0
    if not out.is_file():
        return {
            "stage": label,
            "status": "error",
            "error": f"exit {proc.returncode}, no result file",
            "stderr": proc.stderr[-3000:],
        }
    result: dict[str, Any] = read_json(out)
    result["process_seconds"] = round(wall, 3)
    if proc.returncode != 0 and result.get("status") == "ok":
        result["status"] = "error"
        result["stderr"] = proc.stderr[-3000:]
    return result


def run_stage_process(
    stage: str, data: Path, warehouse: Path, run_id: str, out: Path, memory_limit: str | None = None
) -> dict[str, Any]:
    """One stage of benchmarks.stages in a fresh interpreter."""
    cmd = [sys.executable, "-m", "benchmarks.stages", "--stage", stage, "--data", str(data)]
    cmd += ["--warehouse", str(warehouse), "--run-id", run_id, "--out", str(out)]
    if memory_limit:
        cmd += ["--duckdb-memory-limit", memory_limit]
    result = run_child(cmd, out, stage)
    print(f"  {stage:<15} {_describe(result)}", flush=True)
    return result


def run_dagster_rerun(scale: int, seed: int, workdir: Path) -> dict[str, Any]:
    """`benchmarks.dagster_rerun` in a fresh interpreter: first, no-change and one-new-day runs."""
    out = workdir / "dagster-rerun.json"
    cmd = [sys.executable, "-m", "benchmarks.dagster_rerun", "--scale", str(scale), "--seed", str(seed)]
    print("reruns through Dagster (first, no change, one new day):", flush=True)
    result = run_child([*cmd, "--out", str(out)], out, "dagster_rerun")
    for name in ("first", "no_change", "new_day"):
        if isinstance(result.get(name), dict):
            print(f"  {name:<15} {result[name]['seconds']:>8.2f}s", flush=True)
    return result


def _dagster_rows(d: dict[str, Any]) -> list[str]:
    """Stage-table rows for the Dagster reruns (first, no change, one new day)."""
    if d.get("status") != "ok":
        return [f"| Dagster reruns | - | - | - | - | - | {d.get('status')}: {str(d.get('error'))[:80]} |"]
    rows = []
    labels = {
        "first": "first run",
        "no_change": "no-change rerun",
        "new_day": "one new day (1% new versions)",
    }
    for name, label in labels.items():
        r = d[name]
        note = (
            f"{r['new_versions']:,} new versions; {r['assets_skipped']} assets skipped, "
            f"{len(r['assets_built'])} built; checks reused {r['checks_reused']}/{r['checks']}"
        )
        if name == "no_change" and isinstance(d.get("no_change_again"), dict):
            again = d["no_change_again"]
            note += f"; again: {_fmt(again['seconds'], 2)} s, {len(again['assets_built'])} built"
        if name == "no_change" and d.get("dagster_floor_seconds") is not None:
            note += f"; Dagster's own floor (same graph, empty bodies) {d['dagster_floor_seconds']} s"
        peak = f" {_fmt(d.get('peak_rss_mb'))} " if name == "first" else " "  # the process's peak
        rows.append(f"| Dagster: {label} | {_fmt(r['seconds'], 2)} | | | |{peak}| {note} |")
    return rows


def _describe(r: dict[str, Any]) -> str:
    if r.get("status") != "ok":
        return str(r.get("status")) + (f": {r.get('error')}" if r.get("error") else "")
    return (
        f"{r['seconds']:>8.2f}s  {r.get('rows') or 0:>10} {r.get('rows_label', 'rows')}  "
        f"{r.get('responses_per_s') or 0:>10.0f} responses/s  peak {r.get('peak_rss_mb')} MB"
    )


def run_peer(peer: str, data: Path, workdir: Path, cap: int) -> dict[str, Any]:
    """One peer in the peers' virtual environment, or the reason it could not run."""
    if not PEERS_PYTHON.exists():
        reason = "peer environment missing: `make bench-peers-venv` creates it"
        if PEERS_INSTALL_LOG.is_file():
            reason += "; last install log: " + PEERS_INSTALL_LOG.read_text()[-1500:]
        return {"peer": peer, "status": "not installed", "error": reason}
    out = workdir / f"peer-{peer}.json"
    cmd = [str(PEERS_PYTHON), str(REPO_ROOT / "benchmarks" / "peers" / "run_peers.py"), "--peer", peer]
    cmd += ["--ndjson", str(data / "QuestionnaireResponse.ndjson"), "--out", str(out), "--max", str(cap)]
    result = run_child(cmd, out, peer)
    print(f"  {peer:<15} {result.get('status')} {result.get('total_per_s')} responses/s", flush=True)
    return result


def _ok(stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in stages if s.get("status") == "ok"]


def summarise(run: dict[str, Any]) -> dict[str, Any]:
    """Whole-pipeline totals and the ratios the targets are judged on, for one scale."""
    scale = run["scale"]
    stages = run["stages"]
    ok = _ok(stages)
    seconds = sum(s["seconds"] for s in ok)
    whole = {
        "seconds": round(seconds, 2),
        "process_seconds": round(sum(s.get("process_seconds", 0) for s in ok), 2),
        "responses_per_s": rate(scale, seconds),
        "peak_rss_mb": max((s.get("peak_rss_mb") or 0 for s in ok), default=None),
        "stages_measured": [s["stage"] for s in ok],
        "stages_not_built": [s["stage"] for s in stages if s.get("status") == "not built yet"],
        "stages_failed": [s["stage"] for s in stages if s.get("status") == "error"],
        "projected_1m_seconds_linear": round(seconds * ONE_MILLION / scale, 0),
    }
    ratios: dict[str, Any] = {}
    floor = run.get("floor") or {}
    if floor.get("status") == "ok":
        floor_s = floor["seconds"]
        per_stage = {s["stage"]: round(s["seconds"] / floor_s, 2) for s in ok if s.get("sql")}
        sql_total = sum(s["seconds"] for s in ok if s.get("sql"))
        ratios["sql_stage_vs_floor"] = per_stage
        ratios["sql_total_vs_floor"] = round(sql_total / floor_s, 2) if per_stage else None
        ratios["floor_seconds"] = floor_s
    land = next((s for s in ok if s["stage"] == "land"), None)
    flatten = next((s for s in ok if s["stage"] == "flatten"), None)
    fhir4ds = (run.get("peers") or {}).get("fhir4ds") or {}
    if land and flatten:
        qr_land = land["detail"]["per_type"]["QuestionnaireResponse"]["seconds"]
        pipeline_s = qr_land + flatten["seconds"]
        comparison: dict[str, Any] = {
            "job": "QuestionnaireResponse NDJSON to one row per answer (land incl. validation + flatten)",
            "pipeline_seconds": round(pipeline_s, 2),
            "pipeline_per_s": rate(scale, pipeline_s),
        }
        if fhir4ds.get("status") == "ok":
            comparison["fhir4ds_per_s"] = fhir4ds.get("total_per_s")
            comparison["fhir4ds_sample"] = fhir4ds.get("sample_responses")
            if comparison["pipeline_per_s"] and fhir4ds.get("total_per_s"):
                comparison["speedup"] = round(comparison["pipeline_per_s"] / fhir4ds["total_per_s"], 2)
        ratios["pipeline_vs_fhir4ds"] = comparison
    incremental = run.get("incremental") or {}
    if incremental.get("stages"):
        inc_ok = _ok(incremental["stages"])
        incremental["seconds"] = round(sum(s["seconds"] for s in inc_ok), 2)
        land_inc = next((s for s in inc_ok if s["stage"] == "land"), None)
        incremental["land_seconds"] = land_inc["seconds"] if land_inc else None
        incremental["new_versions"] = land_inc["detail"]["new_versions"] if land_inc else None
    return {"whole": whole, "ratios": ratios}


def rss_growth(scales: dict[str, Any]) -> list[dict[str, Any]]:
    """Peak RSS between consecutive measured scales; exponent < 1 means sub-linear growth."""
    points = sorted(
        (int(k), v["whole"]["peak_rss_mb"])
        for k, v in scales.items()
        if v.get("whole", {}).get("peak_rss_mb")
    )
    out = []
    for (s1, r1), (s2, r2) in itertools.pairwise(points):
        out.append(
            {
                "from_scale": s1,
                "to_scale": s2,
                "scale_ratio": round(s2 / s1, 2),
                "rss_ratio": round(r2 / r1, 2),
                "exponent": round(math.log(r2 / r1) / math.log(s2 / s1), 2),
            }
        )
    return out


def _status(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "missed")


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, judged on the numbers present (largest measured scale when 1M is absent)."""
    scales = results.get("scales") or {}
    if not scales:
        return []
    largest = max(int(k) for k in scales)
    big = scales[str(largest)]
    at_1m = scales.get(str(ONE_MILLION))
    out: list[dict[str, Any]] = []

    whole = (at_1m or big)["whole"]
    complete = not whole["stages_not_built"] and not whole["stages_failed"]
    if at_1m and complete:
        e2e: dict[str, Any] = {
            "status": _status(whole["seconds"] <= 120),
            "value": f"{whole['seconds']} s at 1M",
        }
    else:
        missing = ", ".join(whole["stages_not_built"]) or "none"
        e2e = {
            "status": "not measured",
            "value": (
                f"{whole['seconds']} s at {largest:,} for the stages built (not built: {missing}); "
                f"linear projection to 1M: {whole['projected_1m_seconds_linear']:.0f} s"
            ),
        }
    label = "1M responses NDJSON to published marts, every resource validated, <= 120 s"
    out.append({"target": label, **e2e})

    ratio = (at_1m or big)["ratios"].get("sql_total_vs_floor")
    out.append(
        {
            "target": "SQL stages (flatten, score, marts) within 3x the bare read_json scan",
            "status": _status(None if ratio is None else ratio <= 3),
            "value": f"{ratio}x at {(ONE_MILLION if at_1m else largest):,}" if ratio is not None else "n/a",
        }
    )
    cmp = (at_1m or big)["ratios"].get("pipeline_vs_fhir4ds") or {}
    speedup = cmp.get("speedup")
    out.append(
        {
            "target": "land + flatten at least 30x faster than fhir4ds on the same job",
            "status": _status(None if speedup is None else speedup >= 30),
            "value": (
                f"{speedup}x ({cmp.get('pipeline_per_s')} vs {cmp.get('fhir4ds_per_s')} responses/s)"
                if speedup is not None
                else "fhir4ds not measured"
            ),
        }
    )
    rss = whole.get("peak_rss_mb")
    if rss is None:
        rss_status = "not measured"
    elif at_1m or rss > 1024:  # already over at a smaller scale: it can only grow
        rss_status = _status(rss <= 1024)
    else:
        rss_status = "not measured"
    out.append(
        {
            "target": "peak RSS <= 1 GB in every stage at 1M",
            "status": rss_status,
            "value": f"{rss} MB at {(ONE_MILLION if at_1m else largest):,} (the largest stage's peak)",
        }
    )
    at_3m = scales.get(str(3 * ONE_MILLION))
    flat = None
    if at_1m and at_3m and at_1m["whole"].get("peak_rss_mb") and at_3m["whole"].get("peak_rss_mb"):
        flat = round(at_3m["whole"]["peak_rss_mb"] / at_1m["whole"]["peak_rss_mb"], 2)
    out.append(
        {
            "target": "peak RSS flat from 1M to 3M (within 10 %)",
            "status": _status(None if flat is None else flat <= 1.1),
            "value": f"x{flat} for x3 responses" if flat is not None else "needs 1M and 3M",
        }
    )
    dagster_scale = max(
        (int(k) for k, v in scales.items() if (v.get("dagster_rerun") or {}).get("status") == "ok"),
        default=None,
    )
    if dagster_scale is not None:
        d = scales[str(dagster_scale)]["dagster_rerun"]
        for name, label, limit in (
            ("no_change", "no-change rerun", 5),
            ("new_day", "one-new-day incremental", 10),
        ):
            out.append(
                {
                    "target": f"{label} through Dagster <= {limit} s",
                    "status": _status(d[name]["seconds"] <= limit),
                    "value": f"{d[name]['seconds']} s at {dagster_scale:,} "
                    f"(Dagster floor {d.get('dagster_floor_seconds')} s)",
                }
            )
    rest = results.get("rest") or {}
    r = rest.get("ratio")
    out.append(
        {
            "target": "REST pull within 5% of a minimal requests loop",
            "status": _status(None if r is None else r >= 0.95),
            "value": (
                f"{rest.get('pipeline_per_s')} vs {rest.get('requests_per_s')} responses/s (ratio {r})"
                if r is not None
                else "run python -m benchmarks.rest"
            ),
        }
    )
    return out


def load_results() -> dict[str, Any]:
    """The results file, or an empty skeleton."""
    if RESULTS_FILE.is_file():
        data: dict[str, Any] = read_json(RESULTS_FILE)
        return data
    return {"scales": {}}


def save_results(results: dict[str, Any]) -> None:
    """Refresh machine, derived ratios and targets; write the JSON and the docs table."""
    results["machine"] = machine()
    results["updated"] = now_iso()
    results["rss_growth"] = rss_growth(results.get("scales") or {})
    results["targets"] = targets(results)
    write_json(RESULTS_FILE, results)
    update_docs(results)


# ---------------------------------------------------------------- docs


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_markdown(results: dict[str, Any]) -> str:
    """The generated part of docs/benchmarks.md: machine, per-scale tables, peers, targets."""
    m = results.get("machine") or {}
    lines = [
        f"_Last updated {results.get('updated')} from `benchmarks/results/latest.json`._",
        "",
        "![Whole run and quality stage: seconds and peak RSS against responses](benchmarks-scale.svg)",
        "",
        "### Machine",
        "",
        "| CPU | cores | RAM | OS | Python | DuckDB | fhir.resources | commit |",
        "|---|---|---|---|---|---|---|---|",
        f"| {m.get('cpu')} | {m.get('cores')} | {m.get('ram_gb')} GB | {m.get('os')} | {m.get('python')} | "
        f"{m.get('duckdb')} | {m.get('fhir.resources')} | {m.get('git_commit')} |",
        "",
        f"{m.get('shared', '')}",
        "",
    ]
    for key in sorted(results.get("scales") or {}, key=int):
        run = results["scales"][key]
        ds = run.get("dataset") or {}
        lines += [
            f"### {int(key):,} responses (`{run.get('command')}`, {run.get('measured_at')})",
            "",
            f"Data: {ds.get('total_lines', 0):,} NDJSON lines, {ds.get('mb', 0):,.0f} MB "
            f"({ds.get('patients', 0):,} patients; {ds.get('planted', 0):,} planted bad or special records). "
            f"DuckDB memory_limit: {run.get('duckdb_memory_limit', 'default')}.",
            "",
            *([str(run["note"]), ""] if run.get("note") else []),
            "| stage | seconds | rows | rows/s | responses/s | peak RSS MB "
            "| notes (load average before/after) |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for s in run["stages"]:
            if s.get("status") != "ok":
                note = s.get("status", "")
                if s.get("error"):
                    note += f": {str(s['error'])[:80]}"
                lines.append(f"| {s['stage']} | - | - | - | - | - | {note} |")
                continue
            note = s.get("rows_label", "")
            if s["stage"] == "land":
                d = s["detail"]
                note = (
                    f"{d['new_versions']:,} landed, {d['rejected']:,} rejected; validation "
                    f"{d['validate_seconds']} s ({_fmt(d['validate_per_s'])}/s)"
                )
                if d.get("merge_seconds"):
                    note += f"; merge from landing files {d['merge_seconds']} s"
            if s.get("loadavg_1m_before") is not None:
                note += f" (load {s['loadavg_1m_before']}/{s.get('loadavg_1m_after')})"
            lines.append(
                f"| {s['stage']} | {_fmt(s['seconds'], 2)} | {_fmt(s['rows'])} | {_fmt(s['rows_per_s'])} | "
                f"{_fmt(s['responses_per_s'])} | {_fmt(s.get('peak_rss_mb'))} | {note} |"
            )
        w = run.get("whole") or {}
        lines.append(
            f"| **whole** | **{_fmt(w.get('seconds'), 2)}** | | | **{_fmt(w.get('responses_per_s'))}** | "
            f"**{_fmt(w.get('peak_rss_mb'))}** | stages measured: {', '.join(w.get('stages_measured', []))} |"
        )
        fl = run.get("floor") or {}
        if fl.get("status") == "ok":
            d = fl["detail"]
            lines.append(
                f"| floor: bare `read_json` | {_fmt(fl['seconds'], 2)} | {_fmt(fl['rows'])} | "
                f"{_fmt(fl['rows_per_s'])} | {_fmt(fl['responses_per_s'])} | {_fmt(fl.get('peak_rss_mb'))} | "
                f"best of {d.get('repeats', 1)}: scan {d['scan_seconds']} s + "
                f"unnest {d['unnest_seconds']} s |"
            )
        inc = run.get("incremental") or {}
        if inc.get("seconds") is not None:
            lines.append(
                f"| no-change rerun (all stages) | {_fmt(inc['seconds'], 2)} | | | | | "
                f"land {inc.get('land_seconds')} s, {inc.get('new_versions')} new versions |"
            )
        if run.get("dagster_rerun"):
            lines += _dagster_rows(run["dagster_rerun"])
        lines.append("")
        peers = run.get("peers") or {}
        if peers:
            lines += [
                "| peer (same file, same job) | sample | load/s | flatten/s | load+flatten/s | rows "
                "| peak RSS MB | notes |",
                "|---|---:|---:|---:|---:|---:|---:|---|",
            ]
            for name, p in peers.items():
                if p.get("status") != "ok":
                    lines.append(
                        f"| {name} | - | - | - | - | - | - | {p.get('status')}: {str(p.get('error'))[:80]} |"
                    )
                    continue
                note = p.get("rows_label", "")
                if p.get("count_only_seconds") is not None:
                    note += f"; count(*) only: {_fmt(rate(p['sample_responses'], p['count_only_seconds']))}/s"
                lines.append(
                    f"| {name} {p.get('version', '')} | {_fmt(p.get('sample_responses'))} "
                    f"| {_fmt(p.get('load_per_s'))} | {_fmt(p.get('flatten_per_s'))} "
                    f"| {_fmt(p.get('total_per_s'))} | {_fmt(p.get('rows'))} "
                    f"| {_fmt(p.get('peak_rss_mb'))} | {note} |"
                )
            cmp = (run.get("ratios") or {}).get("pipeline_vs_fhir4ds") or {}
            if cmp:
                lines += [
                    "",
                    f"Pipeline on the same job (QuestionnaireResponse land incl. validation + flatten): "
                    f"{_fmt(cmp.get('pipeline_per_s'))} responses/s; vs fhir4ds: {cmp.get('speedup', '-')}x.",
                ]
            lines.append("")
        ratios = run.get("ratios") or {}
        if ratios.get("sql_stage_vs_floor"):
            parts = ", ".join(f"{k} {v}x" for k, v in ratios["sql_stage_vs_floor"].items())
            lines += [f"SQL stages vs the floor: {parts}; together {ratios.get('sql_total_vs_floor')}x.", ""]
    growth = results.get("rss_growth") or []
    if growth:
        lines += [
            "### Peak RSS growth",
            "",
            "| from | to | responses x | peak RSS x | exponent |",
            "|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {g['from_scale']:,} | {g['to_scale']:,} | {g['scale_ratio']} | {g['rss_ratio']} "
            f"| {g['exponent']} |"
            for g in growth
        ]
        lines.append("")
    rest = results.get("rest")
    if rest:
        lines += [
            "### REST extraction (real local sekmet-fhir server)",
            "",
            "| responses | page size | pipeline FhirClient.pull /s | minimal requests loop /s | ratio "
            "| command |",
            "|---:|---:|---:|---:|---:|---|",
            f"| {_fmt(rest.get('responses'))} | {rest.get('page_size')} "
            f"| {_fmt(rest.get('pipeline_per_s'))} | "
            f"{_fmt(rest.get('requests_per_s'))} | {rest.get('ratio')} | `{rest.get('command')}` |",
            "",
        ]
    val = results.get("validation")
    if val:
        lines += ["### Validation study", "", render_validation(val), ""]
    tg = results.get("targets") or []
    if tg:
        lines += ["### Targets", "", "| target | status | measured |", "|---|---|---|"]
        lines += [f"| {t['target']} | **{t['status']}** | {t['value']} |" for t in tg]
        lines.append("")
    return "\n".join(lines)


def render_validation(val: dict[str, Any]) -> str:
    """A table of the validation study's designs (benchmarks.validation) and its equivalence checks."""
    rows = [
        f"Sample: {val.get('sample'):,} resource versions of the {val.get('scale'):,}-response data set, "
        f"{val.get('resources_per_1m_responses'):,} resources per 1M responses (`{val.get('command')}`).",
        "",
        "| design | resources/s | projected for 1M responses | outcome vs the full model |",
        "|---|---:|---:|---|",
    ]
    for d in val.get("designs", []):
        rows.append(
            f"| {d['design']} | {_fmt(d.get('per_s'))} | {_fmt(d.get('projected_1m_seconds'))} s | "
            f"{d.get('equivalence', '-')} |"
        )
    planted = val.get("planted")
    if planted:
        rows += [
            "",
            f"Planted records in the sample: {planted['records']}, of which "
            f"{planted['expected_rejected']} must be rejected; rejected by the full model "
            f"{planted['rejected_full']}, by the fast path "
            f"{planted['rejected_fast']}; identical outcome and expectation met for {planted['agree']}.",
        ]
    mutants = val.get("mutants")
    if mutants:
        rows += [
            "",
            f"Mutants (single random corruptions of clean resources): {mutants['total']:,}, "
            f"{mutants['with_findings']:,} with findings; fast path and full model disagree on "
            f"{mutants['disagreements']}; the full model raised instead of reporting on "
            f"{mutants['full_model_raised']}.",
        ]
    return "\n".join(rows)


def _chart_series(results: dict[str, Any]) -> dict[str, list[tuple[int, float]]]:
    """Per measured scale: whole seconds, the largest peak RSS and the quality stage's (time, RSS)."""
    series: dict[str, list[tuple[int, float]]] = {
        "whole seconds": [],
        "peak RSS GB": [],
        "quality seconds": [],
        "quality RSS GB": [],
    }
    for key in sorted(results.get("scales") or {}, key=int):
        stages = _ok(results["scales"][key].get("stages") or [])
        if not stages:
            continue
        scale = int(key)
        series["whole seconds"].append((scale, sum(float(st["seconds"]) for st in stages)))
        series["peak RSS GB"].append((scale, max(float(st.get("peak_rss_mb") or 0) for st in stages) / 1024))
        for st in stages:
            if st["stage"] == "quality":
                series["quality seconds"].append((scale, float(st["seconds"])))
                series["quality RSS GB"].append((scale, float(st.get("peak_rss_mb") or 0) / 1024))
    return series


def render_svg(results: dict[str, Any]) -> str:
    """Two log-log panels, time and peak RSS against the number of responses, drawn from the results."""
    series = _chart_series(results)
    width, height, pad = 360, 260, 48
    colours = {"whole seconds": "#1f77b4", "quality seconds": "#ff7f0e", "peak RSS GB": "#1f77b4"}
    colours["quality RSS GB"] = "#ff7f0e"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * width}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{2 * width}" height="{height}" fill="white"/>',
    ]
    for panel, (title, names) in enumerate(
        [
            ("seconds (log)", ["whole seconds", "quality seconds"]),
            ("peak RSS GB (log)", ["peak RSS GB", "quality RSS GB"]),
        ]
    ):
        x0 = panel * width
        points = [pt for n in names for pt in series[n] if pt[1] > 0]
        out.append(f'<text x="{x0 + pad}" y="16" font-weight="bold">{title} vs responses (log)</text>')
        out.append(
            f'<rect x="{x0 + pad}" y="{pad / 2}" width="{width - 1.5 * pad}" height="{height - 1.5 * pad}" '
            'fill="none" stroke="#999"/>'
        )
        if not points:
            continue
        xs = [math.log10(p[0]) for p in points]
        ys = [math.log10(p[1]) for p in points]
        xlo, xhi = min(xs) - 0.1, max(xs) + 0.1
        ylo, yhi = min(ys) - 0.2, max(ys) + 0.2

        box = (x0 + pad, pad / 2, width - 1.5 * pad, height - 1.5 * pad, xlo, xhi, ylo, yhi)

        def at(scale: float, value: float, box: tuple[float, ...] = box) -> str:
            left, top, w, h, xlo, xhi, ylo, yhi = box
            x = left + (math.log10(scale) - xlo) / (xhi - xlo) * w
            y = top + (1 - (math.log10(value) - ylo) / (yhi - ylo)) * h
            return f"{x:.1f},{y:.1f}"

        for n, name in enumerate(names):
            pts = [p for p in series[name] if p[1] > 0]
            if not pts:
                continue
            colour = colours[name]
            line = " ".join(at(*p) for p in pts)
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{line}"/>')
            for scale, value in pts:
                x, y = at(scale, value).split(",")
                out.append(f'<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>')
                label = f"{value:.2f}" if value < 10 else f"{value:.0f}"
                out.append(f'<text x="{float(x) + 4:.1f}" y="{float(y) - 4:.1f}">{label}</text>')
            out.append(
                f'<text x="{x0 + pad + 6}" y="{height - pad - 8 - 14 * n}" fill="{colour}">{name}</text>'
            )
        for scale in sorted({p[0] for p in points}):
            x = at(scale, 10**ylo).split(",")[0]
            out.append(f'<text x="{x}" y="{height - 6}" text-anchor="middle">{scale:,}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def update_docs(results: dict[str, Any]) -> None:
    """Replace the generated block of docs/benchmarks.md (created with a stub around it if missing)
    and redraw the chart of time and peak RSS against scale (docs/benchmarks-scale.svg)."""
    CHART_FILE.write_text(render_svg(results))
    block = f"{DOCS_BEGIN}\n{render_markdown(results)}\n{DOCS_END}"
    if DOCS_FILE.is_file():
        text = DOCS_FILE.read_text()
        if DOCS_BEGIN in text and DOCS_END in text:
            head, rest = text.split(DOCS_BEGIN, 1)
            _, tail = rest.split(DOCS_END, 1)
            DOCS_FILE.write_text(head + block + tail)
            return
        DOCS_FILE.write_text(text.rstrip() + "\n\n## Results\n\n" + block + "\n")
        return
    DOCS_FILE.write_text("# Benchmarks\n\n## Results\n\n" + block + "\n")


# ---------------------------------------------------------------- main


def run_scale(
    scale: int, seed: int, peers: bool, incremental: bool, memory_limit: str | None = None
) -> dict[str, Any]:
    """Everything for one scale; returns the entry stored under `scales[str(scale)]`."""
    cfg = ScaleConfig(responses=scale, seed=seed)
    t0 = time.monotonic()
    data, manifest, reused = ensure_dataset(cfg, folder_for(scale))
    gen_s = time.monotonic() - t0
    print(f"data: {data} ({'reused' if reused else f'generated in {gen_s:.1f}s'})", flush=True)
    workdir = WORK_DIR / str(scale)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    warehouse = workdir / "warehouse.duckdb"
    run: dict[str, Any] = {
        "scale": scale,
        "seed": seed,
        "command": f"make bench SCALE={scale}"
        + (f" SEED={seed}" if seed != 42 else "")
        + (f" DUCKDB_MEMORY_LIMIT={memory_limit}" if memory_limit else ""),
        "duckdb_memory_limit": memory_limit
        or "the pipeline's own per stage (land 384MB, flatten/marts/publish 700MB, score 1GB, quality 256MB)",
        "measured_at": now_iso(),
        "dataset": {
            "folder": str(data.relative_to(REPO_ROOT)),
            "reused": reused,
            "generate_seconds": manifest.get("seconds"),
            "responses": manifest["responses"],
            "patients": manifest.get("patients"),
            "lines": manifest["lines"],
            "total_lines": manifest["total_lines"],
            "mb": round(sum(manifest["bytes"].values()) / 1e6, 1),
            "planted": len(manifest["planted"]),
            "planted_counts": manifest["planted_counts"],
        },
    }
    print("pipeline stages (one process each):", flush=True)
    run["stages"] = [
        run_stage_process(
            s.name, data, warehouse, f"bench-{scale}-1", workdir / f"stage-{s.name}.json", memory_limit
        )
        for s in STAGES
    ]
    print("floor:", flush=True)
    run["floor"] = run_stage_process(FLOOR.name, data, warehouse, "floor", workdir / "floor.json")
    if incremental:
        print("no-change incremental run (same files, same warehouse):", flush=True)
        run["incremental"] = {
            "stages": [
                run_stage_process(
                    s.name, data, warehouse, f"bench-{scale}-2", workdir / f"rerun-{s.name}.json"
                )
                for s in STAGES
            ]
        }
    if scale <= DAGSTER_RERUN_MAX_SCALE:
        run["dagster_rerun"] = run_dagster_rerun(scale, seed, workdir)
    if peers:
        print("peers:", flush=True)
        run["peers"] = {p: run_peer(p, data, workdir, min(cap, scale)) for p, cap in PEER_CAPS.items()}
    run.update(summarise(run))
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the pipeline stage by stage at one scale")
    parser.add_argument("--scale", type=int, default=100_000, help="QuestionnaireResponses (default 100000)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-peers", action="store_true", help="skip the peers")
    parser.add_argument("--no-incremental", action="store_true", help="skip the no-change rerun")
    parser.add_argument("--docs-only", action="store_true", help="only re-render docs from latest.json")
    parser.add_argument(
        "--duckdb-memory-limit",
        default=None,
        help="SET memory_limit on the warehouse in every stage, e.g. 1GB",
    )
    args = parser.parse_args(argv)
    results = load_results()
    if not args.docs_only:
        run = run_scale(
            args.scale,
            args.seed,
            peers=not args.no_peers,
            incremental=not args.no_incremental,
            memory_limit=args.duckdb_memory_limit or None,
        )
        results.setdefault("scales", {})[str(args.scale)] = run
    save_results(results)
    for t in results["targets"]:
        print(f"  [{t['status']:>12}] {t['target']}: {t['value']}")
    print(f"results: {RESULTS_FILE.relative_to(REPO_ROOT)}; table: {DOCS_FILE.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
