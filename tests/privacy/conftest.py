"""Scenarios for the privacy attacks: what a BI user sees (the published BI target and the QI report)
and the truth (the same marts built with min_cell = 1), on the generated clinic and on adversarial
small clinics."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pytest

from marts.build import build_marts
from marts.publish import publish_marts
from marts.report import build_report
from marts.settings import MIN_CELL, MartSettings, load_mart_settings
from tests.support.attacks import Published
from tests.support.generated_warehouse import KEY as GENERATED_KEY
from tests.support.generated_warehouse import generated_warehouse_file
from tests.support.marts_clinic import KEY, Clinic


@dataclass(frozen=True)
class Scenario:
    """The published BI target and report of one clinic, and its unsuppressed truth."""

    name: str
    published: Published
    report_html: str
    truth: Published
    truth_report_html: str  # the report over unsuppressed marts (report min_cell still applied)
    min_cell: int = MIN_CELL


def _unsuppressed(**settings: Any) -> MartSettings:
    """Mart settings with min_cell 1: nothing suppressed (the truth the attacks confirm against).
    The settings refuse min_cell < 2, so the validated settings are copied with it changed."""
    return load_mart_settings(env={}, **settings).model_copy(update={"min_cell": 1})


def _publish_and_report(con: duckdb.DuckDBPyConnection, out: Path) -> tuple[Published, str]:
    result = publish_marts(con, out / "published", run_id="privacy")
    report = build_report(con, out / "report.html", min_cell=MIN_CELL)
    return Published.read(result.database), report.path.read_text(encoding="utf-8")


def adversarial_clinic() -> Clinic:
    """Three therapists with 14 patients each in 2025, plus the hard cases:
    - t4: one therapist with 1 patient (5 sessions: session number 5 has one rating);
    - t5: 12 patients in 2025 and a 2026 of 3 patients, 12 sessions (a small year under a shown 'all');
    - November 2024: one month with 3 sessions (one patient of t1, clinic c2)."""
    c = Clinic()

    def treat(t: str, p: str, org: str, first: str, days: list[str], base: float, drop: float) -> None:
        c.patient(p)
        c.episode(f"eoc-{p}", p, first, days[-1], org=org)
        for i, day in enumerate(days, start=1):
            enc = f"{p}-{i}"
            c.encounter(enc, p, day, eoc=f"eoc-{p}", practitioner=f"Practitioner/{t}", org=org)
            c.wai(enc, p, base + 0.1 * i)
            if i == 1:
                c.total("phq9", enc, p, 18.0)
            if i == len(days):
                c.total("phq9", enc, p, 18.0 - drop)

    for n, t in enumerate(("t1", "t2", "t3")):
        org = "c1" if t != "t3" else "c2"
        for k in range(14):
            month = 1 + (k % 10)
            days = [f"2025-{month:02d}-{d:02d}" for d in (3, 10, 17, 24)]
            treat(t, f"{t}-p{k}", org, days[0], days, 2.5 + 0.2 * n + 0.1 * (k % 5), float(k % 9))
    treat("t4", "t4-p0", "c1", "2025-06-02", [f"2025-06-{d:02d}" for d in (2, 9, 16, 23, 30)], 3.0, 6.0)
    for k in range(12):
        days = [f"2025-{1 + k % 11:02d}-{d:02d}" for d in (5, 12, 19, 26)]
        treat("t5", f"t5-a{k}", "c1", days[0], days, 3.2 + 0.1 * (k % 4), float(k % 7))
    for k in range(3):
        days = [f"2026-0{2 + k}-{d:02d}" for d in (4, 11, 18, 25)]
        treat("t5", f"t5-b{k}", "c2", days[0], days, 3.5, 5.0)
    treat("t1", "t1-nov", "c2", "2024-11-04", ["2024-11-04", "2024-11-11", "2024-11-18"], 3.0, 2.0)
    return c


def _clinic_scenario(tmp: Path) -> Scenario:
    c = adversarial_clinic()
    c.build(reference_date="2026-12-31", therapist_periods="all,year")
    published, report = _publish_and_report(c.con, tmp / "suppressed")
    build_marts(
        c.con, _unsuppressed(reference_date=date(2026, 12, 31), therapist_periods="all,year"), key=KEY
    )
    truth, truth_report = _publish_and_report(c.con, tmp / "truth")
    return Scenario("adversarial", published, report, truth, truth_report)


def _generated_scenario(tmp: Path, source: Path) -> Scenario:
    con = duckdb.connect()
    try:
        con.execute("ATTACH ? AS warehouse (READ_ONLY)", [str(source)])
        con.execute("USE warehouse")
        published, report = _publish_and_report(con, tmp / "suppressed")
    finally:
        con.close()
    copy = tmp / "truth.duckdb"
    shutil.copy(source, copy)
    con = duckdb.connect(str(copy))
    try:
        build_marts(con, _unsuppressed(), key=GENERATED_KEY, with_staging=False)
        truth, truth_report = _publish_and_report(con, tmp / "truth")
    finally:
        con.close()
    return Scenario("generated", published, report, truth, truth_report)


@pytest.fixture(scope="session")
def adversarial(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """The adversarial small clinic, published suppressed and unsuppressed."""
    return _clinic_scenario(tmp_path_factory.mktemp("adversarial"))


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """The generated (demo-like) clinic, published suppressed and unsuppressed."""
    source = generated_warehouse_file(tmp_path_factory)
    return _generated_scenario(tmp_path_factory.mktemp("generated-privacy"), source)
