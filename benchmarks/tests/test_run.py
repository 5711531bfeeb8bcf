"""Runner arithmetic and reporting: totals, ratios, RSS growth, targets, the docs block."""

from __future__ import annotations

import pytest

from benchmarks import run as bench_run


def _stage(name: str, seconds: float, sql: bool, rss: float, **extra) -> dict:
    return {
        "stage": name,
        "status": "ok",
        "seconds": seconds,
        "sql": sql,
        "peak_rss_mb": rss,
        "rows": 10,
        "rows_per_s": 10 / seconds,
        "responses_per_s": 100 / seconds,
        **extra,
    }


def _run(scale: int, rss: float = 500.0) -> dict:
    land = _stage(
        "land",
        40.0,
        False,
        rss,
        detail={
            "per_type": {"QuestionnaireResponse": {"seconds": 30.0}},
            "new_versions": 9,
            "rejected": 1,
            "validate_seconds": 5.0,
            "validate_per_s": 100.0,
        },
    )
    run = {
        "scale": scale,
        "command": f"make bench SCALE={scale}",
        "measured_at": "now",
        "dataset": {"total_lines": 15, "mb": 1.0, "patients": 2, "planted": 1},
        "stages": [
            land,
            _stage("flatten", 10.0, True, rss / 2),
            _stage("score", 5.0, True, rss / 4),
            {"stage": "publish", "status": "not built yet"},
        ],
        "floor": {
            "stage": "floor",
            "status": "ok",
            "seconds": 2.5,
            "rows": 10,
            "rows_per_s": 4.0,
            "responses_per_s": 4.0,
            "detail": {"scan_seconds": 1.0, "unnest_seconds": 1.5},
        },
        "incremental": {
            "stages": [
                _stage("land", 6.0, False, rss, detail={"new_versions": 0}),
                _stage("flatten", 1.0, True, 1),
            ]
        },
        "peers": {"fhir4ds": {"status": "ok", "total_per_s": 100.0, "sample_responses": 50}},
    }
    run.update(bench_run.summarise(run))
    return run


def test_summary_totals_and_ratios():
    run = _run(100_000)
    whole, ratios = run["whole"], run["ratios"]
    assert whole["seconds"] == 55.0
    assert whole["peak_rss_mb"] == 500.0
    assert whole["stages_not_built"] == ["publish"]
    assert whole["projected_1m_seconds_linear"] == 550
    assert ratios["sql_stage_vs_floor"] == {"flatten": 4.0, "score": 2.0}
    assert ratios["sql_total_vs_floor"] == 6.0
    cmp = ratios["pipeline_vs_fhir4ds"]
    assert cmp["pipeline_seconds"] == 40.0 and cmp["pipeline_per_s"] == 2500.0 and cmp["speedup"] == 25.0
    assert run["incremental"]["seconds"] == 7.0 and run["incremental"]["new_versions"] == 0


def test_rss_growth_exponent():
    scales = {"10000": _run(10_000, rss=200.0), "100000": _run(100_000, rss=400.0)}
    (growth,) = bench_run.rss_growth(scales)
    assert growth["scale_ratio"] == 10.0 and growth["rss_ratio"] == 2.0
    assert growth["exponent"] == pytest.approx(0.30, abs=0.01)


def test_targets_are_not_claimed_before_1m_and_judged_at_1m():
    results = {
        "scales": {"100000": _run(100_000)},
        "rest": {"ratio": 0.95, "pipeline_per_s": 95, "requests_per_s": 100},
    }
    results["rss_growth"] = bench_run.rss_growth(results["scales"])
    by_name = {t["target"]: t for t in bench_run.targets(results)}
    e2e = next(v for k, v in by_name.items() if k.startswith("1M responses"))
    assert e2e["status"] == "not measured" and "publish" in e2e["value"]
    assert next(v for k, v in by_name.items() if k.startswith("SQL stages"))["status"] == "missed"  # 6x > 3x
    assert next(v for k, v in by_name.items() if "fhir4ds" in k)["status"] == "missed"  # 25x < 30x
    assert next(v for k, v in by_name.items() if k.startswith("peak RSS <= 1 GB"))["status"] == "not measured"
    assert next(v for k, v in by_name.items() if k.startswith("peak RSS flat"))["status"] == "not measured"
    assert next(v for k, v in by_name.items() if k.startswith("REST"))["status"] == "met"  # 0.95

    big = _run(1_000_000, rss=3000.0)
    big["stages"] = [s for s in big["stages"] if s["status"] == "ok"]
    big.update(bench_run.summarise(big))
    results["scales"]["1000000"] = big
    results["rss_growth"] = bench_run.rss_growth(results["scales"])
    by_name = {t["target"]: t for t in bench_run.targets(results)}
    assert next(v for k, v in by_name.items() if k.startswith("1M responses"))["status"] == "met"  # 55 s
    assert next(v for k, v in by_name.items() if k.startswith("peak RSS <= 1 GB"))["status"] == "missed"

    for rss_3m, verdict in ((3200.0, "met"), (3600.0, "missed")):  # x1.07 and x1.2 the 1M peak
        huge = _run(3_000_000, rss=rss_3m)
        huge["stages"] = [s for s in huge["stages"] if s["status"] == "ok"]
        huge.update(bench_run.summarise(huge))
        results["scales"]["3000000"] = huge
        by_name = {t["target"]: t for t in bench_run.targets(results)}
        assert next(v for k, v in by_name.items() if k.startswith("peak RSS flat"))["status"] == verdict


def test_docs_block_is_replaced_between_markers_only(tmp_path, monkeypatch):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        f"# Benchmarks\n\nhand-written intro\n\n{bench_run.DOCS_BEGIN}\nold\n{bench_run.DOCS_END}\n\nafter\n"
    )
    monkeypatch.setattr(bench_run, "DOCS_FILE", doc)
    chart = tmp_path / "benchmarks-scale.svg"
    monkeypatch.setattr(bench_run, "CHART_FILE", chart)
    results = {"scales": {"100000": _run(100_000)}, "machine": {"cpu": "TestCPU", "cores": 2}, "updated": "t"}
    results["targets"] = bench_run.targets(results)
    bench_run.update_docs(results)
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written intro\n\n") and text.endswith("\n\nafter\n")
    assert "old" not in text and "TestCPU" in text
    assert "| publish | - | - | - | - | - | not built yet |" in text
    assert "| flatten | 10.00 |" in text
    bench_run.update_docs(results)
    assert doc.read_text() == text  # idempotent
    assert chart.read_text().startswith("<svg") and "benchmarks-scale.svg" in text


def test_chart_draws_time_and_rss_per_scale():
    results = {"scales": {"10000": _run(10_000, rss=300.0), "1000000": _run(1_000_000, rss=900.0)}}
    assert bench_run.render_svg(results).count("<polyline") == 2  # no quality stage: whole time and RSS
    for run, rss in ((results["scales"]["10000"], 250.0), (results["scales"]["1000000"], 800.0)):
        run["stages"].append(_stage("quality", 20.0, False, rss))
    svg = bench_run.render_svg(results)
    assert svg.count("<polyline") == 4  # whole and quality seconds, peak and quality RSS
    assert "1,000,000" in svg and "10,000" in svg
    series = bench_run._chart_series(results)
    assert [s for s, _ in series["peak RSS GB"]] == [10_000, 1_000_000]
    assert series["peak RSS GB"][1][1] == 900.0 / 1024


def _dagster(no_change: float, new_day: float) -> dict:
    def one(seconds: float, new: int, skipped: int) -> dict:
        built = ["marts/x"] * (59 - skipped)
        return {
            "seconds": seconds,
            "new_versions": new,
            "assets_skipped": skipped,
            "assets_built": built,
            "checks": 100,
            "checks_reused": 90 if new == 0 else 0,
            "success": True,
        }

    return {
        "status": "ok",
        "first": one(30.0, 15000, 0),
        "no_change": one(no_change, 0, 50),
        "new_day": one(new_day, 100, 13),
        "peak_rss_mb": 800.0,
        "dagster_floor_seconds": 1.8,
    }


def test_dagster_reruns_are_rows_and_targets():
    run = _run(10_000)
    run["dagster_rerun"] = _dagster(4.5, 12.0)
    results = {"scales": {"10000": run}, "machine": {}, "updated": "t"}
    by_name = {t["target"]: t for t in bench_run.targets(results)}
    assert by_name["no-change rerun through Dagster <= 5 s"]["status"] == "met"
    assert by_name["one-new-day incremental through Dagster <= 10 s"]["status"] == "missed"
    assert "floor 1.8 s" in by_name["no-change rerun through Dagster <= 5 s"]["value"]
    results["targets"] = bench_run.targets(results)
    text = bench_run.render_markdown(results)
    assert "| Dagster: no-change rerun | 4.50 | | | | |" in text
    assert "| Dagster: one new day (1% new versions) | 12.00 |" in text
    assert "checks reused 90/100" in text and "empty bodies) 1.8 s" in text
    run["dagster_rerun"] = {"status": "error", "error": "exit 1, no result file"}
    assert "| Dagster reruns | - | - | - | - | - | error: exit 1" in bench_run.render_markdown(results)
    assert not any("Dagster" in t["target"] for t in bench_run.targets(results))
