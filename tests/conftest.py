"""Shared fixtures. Integration tests start real sekmet-fhir processes on free loopback ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Set before anything imports Dagster or Great Expectations.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(autouse=True)
def _isolated_dagster_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test writes to the developer's .dagster_home; each test's instance has the repository's
    dagster.yaml, installed as `make install` installs it."""
    from pipelines.instance import install_instance_config

    home = tmp_path_factory.mktemp("dagster_home")
    install_instance_config(home)
    monkeypatch.setenv("DAGSTER_HOME", str(home))


@pytest.fixture
def fhir_server(tmp_path: Path) -> Iterator[object]:
    """A fresh, empty real FHIR server process for one test."""
    from demo.server import running_server

    with running_server(tmp_path / "fhir-server") as server:
        yield server
