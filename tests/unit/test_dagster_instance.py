"""The repository's dagster.yaml is in effect on a fresh clone.

Dagster reads instance settings only from `$DAGSTER_HOME/dagster.yaml`, and `.dagster_home/` is
git-ignored. `make install` copies the repository's file into `$(DAGSTER_HOME)` (again whenever the
repository's file is newer), and `pipelines.instance.install_instance_config` applies the same rule
for the demo runner and the tests. Each test here uses a new temporary DAGSTER_HOME.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest

from pipelines.instance import REPO_DAGSTER_YAML, REPO_ROOT, install_instance_config

MISSING_FILE_WARNING = "No dagster instance configuration file"
EXPECTED_TAG_LIMITS = [
    {"key": "warehouse", "value": "write", "limit": 1},
    {"key": "warehouse", "value": "merge", "limit": 4},
    {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _instance(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[dg.DagsterInstance, list[str]]]:
    """`DagsterInstance.get()` on `home`, with what Dagster logged while loading it."""
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    records = _Records()
    logger = logging.getLogger("dagster")
    logger.addHandler(records)
    try:
        with dg.DagsterInstance.get() as instance:
            yield instance, records.messages
    finally:
        logger.removeHandler(records)


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    make = shutil.which("make")
    assert make, "make is needed (the project's two commands are make targets)"
    return subprocess.run(
        [make, "--no-print-directory", "-C", str(REPO_ROOT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _assert_repository_settings(instance: dg.DagsterInstance) -> None:
    queue = instance.run_coordinator.get_run_queue_config()  # type: ignore[attr-defined]
    assert queue.max_concurrent_runs == 6
    assert queue.tag_concurrency_limits == EXPECTED_TAG_LIMITS
    assert instance.telemetry_enabled is False
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 1


def test_without_an_instance_file_dagster_warns_and_ignores_the_settings(tmp_path, monkeypatch):
    """The failure this guards against: what a fresh clone got before `make install` installed the file."""
    home = tmp_path / "bare-home"
    home.mkdir()
    with _instance(home, monkeypatch) as (instance, logged):
        assert any(MISSING_FILE_WARNING in m for m in logged)
        assert instance.run_coordinator.get_run_queue_config().tag_concurrency_limits == []  # type: ignore[attr-defined]
        assert instance.telemetry_enabled is True


def test_make_install_copies_dagster_yaml_into_a_clean_dagster_home(tmp_path):
    home = tmp_path / "clean-home"
    dry = _make("-n", "install", f"DAGSTER_HOME={home}")
    assert dry.returncode == 0, dry.stderr
    assert f"cp dagster.yaml {home}/dagster.yaml" in dry.stdout.splitlines()
    assert not home.exists()  # -n only prints


def test_the_install_step_produces_an_instance_with_the_repository_settings(tmp_path, monkeypatch):
    home = tmp_path / "fresh-clone" / ".dagster_home"
    done = _make("instance", f"DAGSTER_HOME={home}")
    assert done.returncode == 0, done.stderr
    assert (home / "dagster.yaml").read_bytes() == REPO_DAGSTER_YAML.read_bytes()
    with _instance(home, monkeypatch) as (instance, logged):
        assert not [m for m in logged if MISSING_FILE_WARNING in m]
        _assert_repository_settings(instance)


def test_the_install_step_refreshes_an_older_copy_and_keeps_a_current_one(tmp_path):
    home = tmp_path / "home"
    assert _make("instance", f"DAGSTER_HOME={home}").returncode == 0
    copy = home / "dagster.yaml"
    again = _make("instance", f"DAGSTER_HOME={home}")
    assert "cp " not in again.stdout  # up to date: nothing copied
    copy.write_text("telemetry:\n  enabled: true\n")
    old = REPO_DAGSTER_YAML.stat().st_mtime - 3600
    os.utime(copy, (old, old))  # the repository's file is now the newer one
    assert _make("instance", f"DAGSTER_HOME={home}").returncode == 0
    assert copy.read_bytes() == REPO_DAGSTER_YAML.read_bytes()


def test_install_instance_config_follows_the_makefile_rule(tmp_path):
    home = tmp_path / "a" / "home"
    target = install_instance_config(home)
    assert target == home / "dagster.yaml" and target.read_bytes() == REPO_DAGSTER_YAML.read_bytes()
    assert [p.name for p in home.iterdir()] == ["dagster.yaml"]  # no partial file left behind

    old = REPO_DAGSTER_YAML.stat().st_mtime - 3600
    target.write_text("# stale\n")
    os.utime(target, (old, old))
    install_instance_config(home)
    assert target.read_bytes() == REPO_DAGSTER_YAML.read_bytes()  # older copy replaced

    target.write_text("# the operator's own\n")
    os.utime(target, (old, old))
    install_instance_config(home, replace_older=False)
    assert target.read_text() == "# the operator's own\n"  # an existing file is left alone

    newer = REPO_DAGSTER_YAML.stat().st_mtime + 3600
    os.utime(target, (newer, newer))
    install_instance_config(home)
    assert target.read_text() == "# the operator's own\n"  # a copy newer than the repository's stays


def test_every_test_runs_on_an_instance_with_the_repository_settings():
    """The suite's autouse fixture (tests/conftest.py) installs the same file in each test's home."""
    home = Path(os.environ["DAGSTER_HOME"])
    assert home != REPO_ROOT / ".dagster_home"
    assert (home / "dagster.yaml").read_bytes() == REPO_DAGSTER_YAML.read_bytes()
    with dg.DagsterInstance.get() as instance:
        _assert_repository_settings(instance)
