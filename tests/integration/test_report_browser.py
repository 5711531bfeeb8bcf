"""The QI report renders in a real browser: headless Chromium (Debian's `chromium` package; `.ci/run`
installs it) opens the report built from a generated clinic with network access blocked, and every
chart's SVG is in the rendered DOM with its marks laid out, and no script error occurred."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest

from marts.report import build_report
from tests.support.generated_warehouse import CHART_FLOORS, generated_warehouse_file

# chart id -> least number of <circle>/<path>/<rect> data marks it must have in the rendered DOM (the
# same floors the unit test holds the generated file to)
# Chromium's sandbox needs user namespaces, which CI containers and root sessions often lack.
FLAGS = [
    "--headless",
    "--disable-gpu",
    "--no-sandbox",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    # any attempt to reach the network fails: the report must not need it
    "--host-resolver-rules=MAP * ~NOTFOUND",
]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not found:
        pytest.fail(
            "headless Chromium is needed to test that the QI report renders, and none was found on PATH "
            "(chromium, chromium-browser, google-chrome). Install Debian's package: "
            "apt-get update && apt-get install -y chromium (.ci/run does this)."
        )
    return found


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    warehouse = generated_warehouse_file(tmp_path_factory)
    out = tmp_path_factory.mktemp("report") / "qi_report.html"
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        build_report(con, out, source="generated clinic")
    finally:
        con.close()
    return out


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [_chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=180,  # a hung browser must not hang CI
        check=False,
    )


def test_every_chart_renders_in_headless_chromium(report_file, tmp_path):
    done = _run(["--dump-dom", report_file.as_uri()], tmp_path)
    dom = done.stdout
    assert done.returncode == 0, done.stderr[-2000:]
    assert "<body" in dom, done.stderr[-2000:]
    # the page's own check ran after layout: every chart has marks and a non-empty box, no script error
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert 'data-rendered="ok"' in body, body
    assert f'data-charts="{len(CHART_FLOORS)}"' in body, body
    html_tag = re.search(r"<html([^>]*)>", dom).group(1)
    assert "data-js-error" not in html_tag, html_tag
    for chart_id, floor in CHART_FLOORS.items():
        match = re.search(rf'<svg class="chart" data-chart="{chart_id}"([^>]*)>(.*?)</svg>', dom, re.S)
        assert match, f"chart {chart_id} missing from the rendered DOM"
        attrs, inner = match.groups()
        marks = len(re.findall(r'<(?:circle|path|rect)\b[^>]*class="mark\b', inner))
        assert marks >= floor, (chart_id, marks)
        drawn = re.search(r'data-drawn-marks="(\d+)"', attrs)
        size = re.search(r'data-drawn-size="(\d+)x(\d+)"', attrs)
        assert drawn and int(drawn.group(1)) == marks, (chart_id, attrs)
        assert size and int(size.group(1)) > 100 and int(size.group(2)) > 50, (chart_id, attrs)


def test_the_report_paints_a_non_blank_page(report_file, tmp_path):
    shot = tmp_path / "report.png"
    done = _run(["--window-size=1100,4000", f"--screenshot={shot}", report_file.as_uri()], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # a blank page of this size compresses to a few kilobytes; charts, tables and text do not
    assert len(data) > 100_000, len(data)


def test_a_script_error_would_be_caught(report_file, tmp_path):
    """The error hook the first test relies on works: a broken script is recorded on <html>."""
    broken = tmp_path / "broken.html"
    broken.write_text(
        report_file.read_text(encoding="utf-8").replace("</body>", "<script>notDefined();</script></body>")
    )
    done = _run(["--dump-dom", broken.as_uri()], tmp_path)
    html_tag = re.search(r"<html([^>]*)>", done.stdout).group(1)
    assert "data-js-error" in html_tag and "notDefined" in html_tag, html_tag
