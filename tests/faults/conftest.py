"""Fixtures of the fault suite: one real FHIR server loaded with a small generated clinic, the
warehouse of a clean run against it, a fault proxy per test, and the log journal that proves no
credential reached a log line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.generator import GeneratedData, GeneratorConfig, generate
from demo.loader import load_to_server
from demo.server import FhirServer, running_server
from tests.faults import support
from tests.faults.proxy import FaultProxy, running_proxy
from tests.faults.support import LogJournal

# Small on purpose (the suite runs in `make test`): ~330 QuestionnaireResponses span 9 pages of 40.
CLINIC = GeneratorConfig(patients=8, seed=11, mess_rate=0.05)


@pytest.fixture(autouse=True)
def log_journal(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> Iterator[LogJournal]:
    """Capture every log record of the test; afterwards, fail if any credential appears in them."""
    caplog.set_level(logging.DEBUG)
    journal = LogJournal(caplog, capfd)
    yield journal
    assert journal.leaks() == [], "a credential appeared in a log line"


@pytest.fixture(scope="session")
def clinic() -> GeneratedData:
    """The generated clinic every server of the suite is loaded with."""
    return generate(CLINIC)


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory, clinic: GeneratedData) -> Iterator[FhirServer]:
    """A real sekmet-fhir process with the clinic loaded. Shared: tests must not change its data."""
    with running_server(tmp_path_factory.mktemp("upstream") / "server") as server:
        load_to_server(server.base_url, clinic)
        yield server


@pytest.fixture
def fresh_upstream(tmp_path: Path, clinic: GeneratedData) -> Iterator[FhirServer]:
    """A server of the test's own, for faults that change the data on the server."""
    with running_server(tmp_path / "own-server") as server:
        load_to_server(server.base_url, clinic)
        yield server


@pytest.fixture(scope="session")
def clean(tmp_path_factory: pytest.TempPathFactory, upstream: FhirServer) -> support.Snapshot:
    """The warehouse of a clean run straight against the server (no proxy, no fault)."""
    path = tmp_path_factory.mktemp("clean") / "warehouse.duckdb"
    result = support.run_raw(support.source(upstream.base_url), path)
    assert result.success
    snap = support.snapshot(path)
    snap.assert_sound()
    assert snap.rejected, "the clinic plants invalid resources; the clean run must reject some"
    return snap


@pytest.fixture
def proxy(upstream: FhirServer, log_journal: LogJournal) -> Iterator[FaultProxy]:
    """A fault proxy in front of the shared server (no rules until the test adds them)."""
    with running_proxy(upstream.base_url) as p:
        log_journal.proxies.append(p)
        yield p
