"""The wheel carries every data file the packages read at run time: the SQL files (marts/sql/,
marts/report/sql/, fhir_mappings/sql/*/, quality_checks/sql/, pipelines/sql/*/, demo/sql/), the
instrument and suite YAML, and the report's templates. A file left out would only fail once installed,
so the wheel is built here from a copy of the source tree and its listing compared with the tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from pipelines.settings import REPO_ROOT

PACKAGES = ("pipelines", "assets", "fhir_mappings", "quality_checks", "marts", "demo")
DATA_SUFFIXES = {".sql", ".yaml", ".j2", ".json", ".css", ".js"}


def _data_files() -> set[str]:
    """Every data file under the packages, as a path relative to the repository (POSIX)."""
    found = set()
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*"):
            if path.is_file() and path.suffix in DATA_SUFFIXES and "__pycache__" not in path.parts:
                found.add(path.relative_to(REPO_ROOT).as_posix())
    return found


def test_the_wheel_holds_every_sql_yaml_template_and_json_file(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, source / package, ignore=ignore)
    out = tmp_path / "wheel"
    # pip, not `python -m build`: it is in every venv and uses the configured package index
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--quiet", "-w", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("alliance_qi-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    expected = _data_files()
    # the folders the brief of issue 11 names, so an empty glob cannot pass this test
    for folder in (
        "marts/sql/",
        "marts/sql/publish/",
        "marts/report/sql/",
        "marts/report/templates/",
        "fhir_mappings/sql/scoring/",
        "fhir_mappings/instruments/",
        "quality_checks/sql/",
        "quality_checks/suites/",
        "pipelines/sql/",
        "pipelines/sql/build_state/",
        "demo/sql/",
    ):
        assert any(f.startswith(folder) and "/" not in f[len(folder) :] for f in expected), folder
    assert sorted(expected - names) == []
    # the packages and the wheel's metadata, nothing else (no tests, benchmarks or local data)
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == set(PACKAGES)
