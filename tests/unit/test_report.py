"""The QI report: one self-contained HTML file built from the marts and the data-quality summary of a
generated clinic; every section with a chart, a caption and its n; small cells never shown; no FHIR id.
The charts themselves (SVG drawn in Python) are tested on small inputs."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from marts.report import build_report, charts, report_path
from marts.report.render import format_count
from pipelines.settings import REPO_ROOT
from tests.support.generated_warehouse import CHART_FLOORS, FHIR_ID_PATTERNS, generated_warehouse_file

SECTIONS = (
    "overview",
    "monthly",
    "trajectories",
    "early-alliance",
    "skill-use",
    "therapists",
    "adherence",
    "not-on-track",
    "data-quality",
)


@pytest.fixture(scope="module")
def warehouse_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_warehouse_file(tmp_path_factory)


@pytest.fixture(scope="module")
def report(warehouse_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, object]:
    out = tmp_path_factory.mktemp("report") / "qi_report.html"
    con = duckdb.connect(str(warehouse_path), read_only=True)
    try:
        result = build_report(con, out, source="generated clinic")
    finally:
        con.close()
    return out, out.read_text(encoding="utf-8"), result


def _svg(html: str, chart_id: str) -> str:
    match = re.search(rf'<svg class="chart" data-chart="{chart_id}".*?</svg>', html, re.S)
    assert match, chart_id
    return match.group(0)


def _marks(svg: str) -> int:
    return len(re.findall(r'<(?:circle|path|rect)\b[^>]*class="mark\b', svg))


def test_the_report_is_one_self_contained_file(report):
    path, html, result = report
    assert result.path == path and result.bytes == len(html.encode())
    assert html.startswith("<!DOCTYPE html>")
    # nothing is fetched: no external script, stylesheet, image, font or frame
    assert not re.search(r"<(link|img|iframe|object|embed)\b", html, re.I)
    assert not re.search(r"<script\b[^>]*\bsrc=", html, re.I)
    assert not re.search(r"@import|url\(", html, re.I)
    for attr in re.findall(r'\b(?:href|src)="([^"]*)"', html):
        assert attr.startswith("#"), attr
    # the only absolute URL is the SVG namespace name (an identifier, never fetched)
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}
    assert not list(path.parent.glob("*.tmp"))  # written atomically


def test_every_section_has_its_chart_with_marks_a_caption_and_its_n(report):
    _, html, result = report
    assert result.sections == SECTIONS
    assert set(result.chart_marks) == set(CHART_FLOORS)
    for chart_id, floor in CHART_FLOORS.items():
        svg = _svg(html, chart_id)
        assert _marks(svg) == result.chart_marks[chart_id]
        assert result.chart_marks[chart_id] >= floor, chart_id
        assert "<title" in svg and "Nothing to show" not in svg and "Too few" not in svg
    for section in SECTIONS:
        body = re.search(rf'<section id="{section}">(.*?)</section>', html, re.S)
        assert body, section
        assert '<p class="caption">' in body.group(1), section
        assert '<p class="n">' in body.group(1), section
        if section != "overview":
            n_line = re.search(r'<p class="n">(.*?)</p>', body.group(1), re.S).group(1)
            assert re.search(r"\bn = (&lt;)?[\d,]+", n_line), (section, n_line)


def test_the_numbers_come_from_the_marts(report, warehouse_path):
    _, html, _ = report
    con = duckdb.connect(str(warehouse_path), read_only=True)
    try:
        est, lo, hi, n = con.execute(
            """SELECT estimate, ci_lower, ci_upper, n FROM marts.alliance_associations
               WHERE question_id = 'early_alliance_vs_phq9_improvement' AND method LIKE 'pearson%'"""
        ).fetchall()[0]
        therapists = con.execute(
            """SELECT count(*) FROM marts.therapist_alliance
               WHERE period_type = 'all' AND NOT suppressed AND mean_alliance IS NOT NULL"""
        ).fetchall()[0][0]
        sessions = con.execute("SELECT count(*) FROM marts.alliance_sessions").fetchall()[0][0]
        by_number = con.execute(
            "SELECT count(wai_sr_mean) FROM marts.alliance_sessions GROUP BY session_number"
        ).fetchall()
    finally:
        con.close()
    assert f"r = {est:.2f} (95% CI {lo:.2f} to {hi:.2f}), n = {n:,} episodes" in html
    funnel = _svg(html, "therapist_funnel")
    assert len(re.findall(r'<circle class="mark point"', funnel)) == therapists
    assert f"{sessions:,}" in html
    # a session number is drawn only when at least 11 sessions have a patient rating
    trajectories = _svg(html, "alliance_trajectories")
    drawn = len(re.findall(r"<circle class=\"mark point\"[^>]*fill=\"#0072B2\"", trajectories))
    assert drawn == sum(1 for (k,) in by_number if k >= 11)
    assert drawn < len(by_number)  # the generated clinic has long episodes with few sessions late on


def test_suppressed_kpi_cells_are_marked_not_shown(report, warehouse_path):
    _, html, _ = report
    from marts.report.render import _KPI_COLUMNS

    con = duckdb.connect(str(warehouse_path), read_only=True)
    try:
        suppressed = con.execute(
            "SELECT suppressed_columns FROM marts.qi_monthly WHERE level = 'practice'"
        ).fetchall()
    finally:
        con.close()
    shown = {c for c, _, _ in _KPI_COLUMNS}
    expected = sum(len(set((s or "").split(",")) & shown) for (s,) in suppressed)
    assert expected > 0
    table = re.search(r'<section id="monthly">.*?<table>(.*?)</table>', html, re.S).group(1)
    assert table.count('class="sup"') == expected


def test_no_fhir_id_reaches_the_report(report, warehouse_path):
    _, html, _ = report
    for pattern in FHIR_ID_PATTERNS:
        assert not re.search(pattern, html), pattern
    con = duckdb.connect(str(warehouse_path), read_only=True)
    try:
        ids = {
            r[0]
            for t in ("patient", "practitioner", "encounter", "episode_of_care", "questionnaire_response")
            for r in con.execute(f"SELECT DISTINCT id FROM raw.{t}").fetchall()
        }
    finally:
        con.close()
    tokens = set(re.findall(r"[A-Za-z0-9_.:-]+", html))
    assert len(ids) > 500
    assert not (ids & tokens)


def test_with_a_large_min_cell_every_count_and_small_group_is_withheld(warehouse_path, tmp_path):
    con = duckdb.connect(str(warehouse_path), read_only=True)
    try:
        result = build_report(con, tmp_path / "r.html", min_cell=100_000, with_quality=False)
    finally:
        con.close()
    html = (tmp_path / "r.html").read_text()
    assert result.min_cell == 100_000
    cards = re.findall(r'<div class="value">(.*?)</div>', html)
    # patients, episodes, sessions, measured share: withheld; the fifth card counts therapists (staff);
    # then the six counts of the not-on-track panel, all withheld
    withheld = ("&lt;100000", "&ndash;", "0")
    assert len(cards) == 11 and all(c in withheld for c in [*cards[:4], *cards[5:]]), cards
    # points resting on fewer cases than min_cell are not drawn
    assert result.chart_marks["early_alliance_phq9"] == 0
    assert result.chart_marks["adherence_pdc"] == 0 and result.chart_marks["adherence_mars"] == 0
    trajectories = _svg(html, "alliance_trajectories")
    assert 'class="mark point"' not in trajectories
    assert "No data-quality checks have run" in html


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0, "0"),
        (1, "&lt;11"),
        (10, "&lt;11"),
        (11, "11"),
        (1234, "1,234"),
        (None, "&ndash;"),
        (float("nan"), "&ndash;"),
    ],
)
def test_format_count_never_shows_a_small_cell(value, shown):
    assert format_count(value, 11) == shown


def _marts_only_copy(source: Path, target: Path) -> Path:
    """A new database holding only the `marts` schema of `source` (no raw, staging or quality)."""
    con = duckdb.connect(str(target))
    try:
        con.execute("ATTACH ? AS src (READ_ONLY)", [str(source)])
        con.execute("CREATE SCHEMA marts")
        names = con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'src' "
            "AND table_schema = 'marts'"
        ).fetchall()
        for (name,) in names:
            con.execute(f"CREATE TABLE marts.{name} AS SELECT * FROM src.marts.{name}")
        con.execute("DETACH src")
        schemas = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT table_schema FROM information_schema.tables WHERE table_catalog = ?",
                [target.stem],
            ).fetchall()
        }
        assert schemas == {"marts"} and len(names) >= 12
    finally:
        con.close()
    return target


def test_the_report_reads_only_the_marts(warehouse_path, tmp_path):
    """The same report from the full warehouse and from a database that holds only the marts."""
    when = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    full = duckdb.connect(str(warehouse_path), read_only=True)
    try:
        expected = build_report(full, tmp_path / "full.html", generated_at=when, source="s")
    finally:
        full.close()
    marts_only = _marts_only_copy(warehouse_path, tmp_path / "marts_only.duckdb")
    con = duckdb.connect(str(marts_only), read_only=True)
    try:
        result = build_report(con, tmp_path / "marts.html", generated_at=when, source="s")
    finally:
        con.close()
    html = (tmp_path / "marts.html").read_text()
    assert html == (tmp_path / "full.html").read_text()
    assert result.chart_marks == expected.chart_marks
    # the data-quality section comes from marts.report_data_quality, which holds the mart checks too
    assert "marts.therapist_alliance" in re.search(r'<section id="data-quality">.*?</section>', html, re.S)[0]


HOSTILE = '<script>alert("x")</script>'


def test_text_from_a_mart_is_escaped(warehouse_path, tmp_path):
    """A clinic, therapist or table name carrying markup is shown as text, never run."""
    path = _marts_only_copy(warehouse_path, tmp_path / "hostile.duckdb")
    con = duckdb.connect(str(path))
    try:
        con.execute(
            "UPDATE marts.therapist_alliance SET therapist_key = ? || therapist_key "
            "WHERE therapist_key = (SELECT min(therapist_key) FROM marts.therapist_alliance "
            # a therapist the funnel draws (one whose mean the marts withheld is not drawn at all)
            "WHERE period_type = 'all' AND mean_alliance IS NOT NULL)",
            [HOSTILE],
        )
        con.execute(
            "UPDATE marts.report_data_quality SET table_name = ?, run_id = ? WHERE level = 'table'",
            [HOSTILE, HOSTILE],
        )
        con.execute("UPDATE marts.report_data_quality SET run_id = ?", [HOSTILE])
        con.execute("UPDATE marts.report_therapist_funnel SET period_type = ?", [HOSTILE])
        con.execute(
            "UPDATE marts.therapist_alliance SET period_type = ? WHERE period_type = 'all'", [HOSTILE]
        )
        result = build_report(con, tmp_path / "r.html")
    finally:
        con.close()
    html = (tmp_path / "r.html").read_text()
    assert "<script>alert" not in html and 'alert("x")' not in html
    # the two scripts of the page itself, nothing more
    assert len(re.findall(r"<script\b", html)) == 2
    escaped = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"
    data_quality = re.search(r'<section id="data-quality">.*?</section>', html, re.S)[0]
    assert data_quality.count(escaped) > 2  # table cells, the run id, the chart's row labels
    # the funnel still finds its period and draws every therapist, the renamed one by escaped pseudonym
    assert "(period: " + escaped + ")" in html
    funnel = _svg(html, "therapist_funnel")
    assert "therapist &lt;script" in funnel
    assert result.chart_marks["therapist_funnel"] >= CHART_FLOORS["therapist_funnel"]


def test_report_path_setting(tmp_path):
    assert report_path(env={}) == REPO_ROOT / "reports" / "qi_report.html"
    target = tmp_path / "out" / "qi.html"
    assert report_path(env={"ALLIANCE_QI_REPORT_PATH": str(target)}) == target.resolve()


# ---- charts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (0, 100, [0, 20, 40, 60, 80, 100]),
        (1, 5, [1, 2, 3, 4, 5]),
        (3.2, 4.6, [3.5, 4.0, 4.5]),
        (0, 1, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    ],
)
def test_nice_ticks(lo, hi, expected):
    assert charts.nice_ticks(lo, hi) == pytest.approx(expected)


def test_line_chart_leaves_gaps_and_escapes_text():
    svg = charts.line_chart(
        "t",
        "A <title> & more",
        [charts.Series("s <b>", [(0, 1.0), (1, 2.0), (2, None), (3, 1.5), (4, 2.5)], charts.BLUE)],
        x_label="x",
        y_label="y",
    )
    assert svg.count('class="mark line"') == 2  # the missing point splits the line in two
    assert svg.count('class="mark point"') == 4
    assert "A &lt;title&gt; &amp; more" in svg and "s &lt;b&gt;" in svg and "<b>" not in svg
    assert 'data-marks="6"' in svg


def test_bar_chart_shows_a_gap_for_a_withheld_value():
    svg = charts.bar_chart(
        "b",
        "bars",
        ["one", "two"],
        [charts.BarSeries("p", charts.BLUE, [0.5, None]), charts.BarSeries("c", charts.ORANGE, [0.25, 0.75])],
        x_label="x",
        y_label="y",
        y_range=(0, 1),
    )
    assert svg.count('class="mark bar"') == 3
    assert svg.count(">n/s</text>") == 1


def test_funnel_chart_draws_limits_and_therapists():
    points = [
        charts.FunnelPoint("a", 20, 4.4, 4.3, "above_outer"),
        charts.FunnelPoint("b", 30, 3.8, 3.8, "within"),
        charts.FunnelPoint("c", 15, 3.2, 3.3, "below_inner"),
    ]
    svg = charts.funnel_chart(
        "f", "funnel", points, grand=3.8, sigma=0.5, z_inner=1.96, z_outer=3.09, x_label="n", y_label="mean"
    )
    assert svg.count('class="mark limit"') == 4  # inner and outer, above and below
    assert svg.count('class="mark point"') == 3 and svg.count('class="mark shrunken"') == 3
    assert svg.count('class="mark grand"') == 1


def test_templates_autoescape_and_fail_on_a_missing_value():
    from jinja2 import UndefinedError
    from markupsafe import Markup

    from marts.report.render import environment

    env = environment()
    html = env.get_template("overview.html.j2").render(
        cards=[("<b>1</b>", 'a "label" & <i>more</i>')], min_cell=11, period=""
    )
    assert "<b>1</b>" not in html and "&lt;b&gt;1&lt;/b&gt;" in html
    assert "&#34;label&#34; &amp; &lt;i&gt;more&lt;/i&gt;" in html
    # a chart is Markup: inserted as drawn, its own texts escaped by the chart
    svg = charts.line_chart("c", "<t>", [], x_label="<x>", y_label="y")
    assert isinstance(svg, Markup) and "&lt;t&gt;" in svg
    shown = env.get_template("trajectories.html.j2").render(
        chart=svg, ci_percent="95", total="5", first_n="1", last=None, min_cell=11
    )
    assert '<svg class="chart" data-chart="c"' in shown
    with pytest.raises(UndefinedError):
        env.get_template("trajectories.html.j2").render(chart=svg)


REPORT_PACKAGE = REPO_ROOT / "marts" / "report"


def test_the_report_s_queries_are_its_sql_files_and_no_python_holds_sql():
    """Every query of the report is a file of marts/report/sql/ that build.py reads by name; the files
    say what they return and reach the marts only through `{{ schema }}`; no module of marts/report/
    holds SQL text or builds it."""
    statement = re.compile(r"""["'](\s*)(SELECT|INSERT|CREATE|DROP|WITH|ATTACH|COPY|UPDATE|DELETE)\s""")
    for path in REPORT_PACKAGE.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not statement.search(text), f"{path.name} holds SQL text"
        assert "{s}" not in text and ".execute(" not in text and "noqa: S608" not in text, path.name
    files = {p.name for p in (REPORT_PACKAGE / "sql").glob("*.sql")}
    read = set(re.findall(r'"([a-z0-9_]+\.sql)"', (REPORT_PACKAGE / "render.py").read_text(encoding="utf-8")))
    assert files == read and len(files) >= 10
    for name in files:
        text = (REPORT_PACKAGE / "sql" / name).read_text(encoding="utf-8")
        assert text.startswith("-- "), f"{name} has no header comment"
        code = re.sub(r"--[^\n]*", "", text)
        assert "{{ schema }}." in code, name
        assert not re.search(r"\b(marts|raw|staging|quality|ops|published)\.", code), name


def test_the_report_reads_the_schema_it_is_given(warehouse_path, tmp_path):
    """`schema` reaches every query as a quoted identifier: a schema without the marts fails, and a
    name that is not a plain identifier is refused before any SQL runs."""
    con = duckdb.connect(str(warehouse_path), read_only=True)
    try:
        with pytest.raises(duckdb.CatalogException, match="report_overview"):
            build_report(con, tmp_path / "r.html", schema="staging")
        with pytest.raises(ValueError, match="not a schema name"):
            build_report(con, tmp_path / "r.html", schema='marts"; --')
    finally:
        con.close()
    assert not (tmp_path / "r.html").exists()


def test_an_early_alliance_that_does_not_vary_draws_the_band_without_a_line(tmp_path):
    """Every episode with the same early alliance: the fit mart has no line (slope NaN, intercept NULL)
    and the report draws the one band alone instead of failing."""
    from tests.support.marts_clinic import Clinic

    c = Clinic()
    for n in (1, 2, 3, 4):
        p = f"p{n}"
        c.patient(p)
        c.episode(f"eoc-{p}", p, "2026-03-01", "2026-03-31", org="c1")
        for i in (1, 2, 3):
            enc = f"{p}-{i}"
            c.encounter(enc, p, f"2026-03-0{i}", eoc=f"eoc-{p}", practitioner="Practitioner/t1", org="c1")
            c.wai(enc, p, 4.0)
            c.total("phq9", enc, p, 18.0 - n * i)
    c.build(reference_date="2026-06-30", min_cell=2, therapist_periods="all")
    (fit,) = c.dicts("SELECT intercept, slope, episodes FROM marts.report_early_alliance_fit")
    assert fit["episodes"] == 4 and fit["intercept"] is None
    result = build_report(c.con, tmp_path / "r.html")
    svg = _svg((tmp_path / "r.html").read_text(encoding="utf-8"), "early_alliance_phq9")
    # one band (4.0-4.5) holding the four episodes: one dot, never one per episode
    assert result.chart_marks["early_alliance_phq9"] == 1 and 'class="mark fit"' not in svg
