"""The QI report's skill use x alliance section: numbers from marts.alliance_associations, neutral
wording that follows the intervals, and nothing shown under min_cell."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from marts.report.render import _skill_finding, build_report
from tests.support.generated_warehouse import generated_warehouse_file


@pytest.fixture(scope="module")
def warehouse_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_warehouse_file(tmp_path_factory)


def _section(html: str) -> str:
    return re.search(r'<section id="skill-use">(.*?)</section>', html, re.S).group(1)


def test_the_section_shows_every_model_term_from_the_mart(warehouse_path, tmp_path):
    con = duckdb.connect(str(warehouse_path), read_only=True)
    try:
        rows = con.execute(
            "SELECT question_id, estimate, ci_lower, ci_upper, n FROM marts.alliance_associations "
            "WHERE question_id LIKE 'skill_alliance_%' AND NOT suppressed"
        ).fetchall()
        build_report(con, tmp_path / "r.html")
    finally:
        con.close()
    section = _section((tmp_path / "r.html").read_text())
    assert len(rows) == 7
    for _, est, lo, hi, _n in rows:
        assert f"<td>{est:.3f}</td>" in section
        assert f"{lo:.3f} to {hi:.3f}" in section
    assert f"n = {rows[0][4]:,} closed episodes, 12 therapists" in section
    assert "resampling whole therapists" in section and "do not show that" in section


def test_with_a_large_min_cell_no_estimate_is_shown(warehouse_path, tmp_path):
    con = duckdb.connect(str(warehouse_path), read_only=True)
    try:
        build_report(con, tmp_path / "r.html", min_cell=10_000)
    finally:
        con.close()
    section = _section((tmp_path / "r.html").read_text())
    assert section.count("not shown (too few episodes)") == 7
    assert "too few closed episodes" in section
    assert not re.search(r"<td>-?\d+\.\d{3}</td>", section)


@pytest.mark.parametrize(
    ("term", "lo", "hi", "says"),
    [
        ("skill_use", -0.2, -0.05, "more skill use ended with lower"),
        ("skill_use", 0.05, 0.2, "more skill use ended with higher"),
        ("skill_use", -0.1, 0.1, "no clear link between skill use"),
        ("alliance", -4.0, -2.0, "stronger early alliance ended with lower"),
        ("alliance", -1.0, 1.0, "no clear link between early alliance"),
        ("skill_use_x_alliance", -0.2, -0.04, "stronger in episodes with a stronger"),
        ("skill_use_x_alliance", 0.04, 0.2, "weaker in episodes with a stronger"),
        ("skill_use_x_alliance", -0.1, 0.1, "do not show whether"),
    ],
)
def test_the_finding_follows_the_interval(term, lo, hi, says):
    assert says in _skill_finding(term, lo, hi)
