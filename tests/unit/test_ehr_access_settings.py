"""EHR access settings (bulk level/Group, patient-scoped searches) and the request-rate limiter."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.resources.fhir.ratelimit import RateLimiter
from pipelines.resources.fhir_source import FhirSourceConfig
from pipelines.settings import SettingsError, load_settings

SOURCES = """
default_source: ehr
sources:
  ehr:
    kind: bulk
    base_url: https://ehr.example.org/fhir
    bulk: {level: group, group_id: cohort-1}
    search_scope: patient
    patient_group: cohort-1
    max_requests_per_second: 5
"""


def _file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sources.yaml"
    p.write_text(text)
    return p


def test_file_sets_bulk_level_group_and_patient_scope(tmp_path):
    s = load_settings(_file(tmp_path, SOURCES), env={}).source()
    assert (s.bulk.level, s.bulk.group_id) == ("group", "cohort-1")
    assert (s.search_scope, s.patient_group, s.max_requests_per_second) == ("patient", "cohort-1", 5.0)
    config = FhirSourceConfig.from_settings(s)
    assert (config.bulk_level, config.bulk_group_id, config.search_scope) == ("group", "cohort-1", "patient")


def test_environment_overrides_bulk_and_search_scope(tmp_path):
    env = {
        "FHIR_BULK_LEVEL": "patient",
        "FHIR_BULK_GROUP": "other",
        "FHIR_SEARCH_SCOPE": "system",
        "FHIR_PATIENT_GROUP": "g2",
        "FHIR_MAX_REQUESTS_PER_SECOND": "2.5",
    }
    s = load_settings(_file(tmp_path, SOURCES), env=env).source()
    assert (s.bulk.level, s.bulk.group_id) == ("patient", "other")
    assert (s.search_scope, s.patient_group, s.max_requests_per_second) == ("system", "g2", 2.5)


def test_group_level_without_group_id_and_unknown_scope_are_refused(tmp_path):
    with pytest.raises(SettingsError, match="group_id"):
        load_settings(_file(tmp_path, SOURCES.replace("group_id: cohort-1", "group_id: ''")), env={})
    with pytest.raises(SettingsError, match="search_scope"):
        load_settings(_file(tmp_path, SOURCES), env={"FHIR_SEARCH_SCOPE": "everything"})


def test_rate_limiter_spaces_requests_and_counts_them():
    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    limiter = RateLimiter(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        limiter.acquire()
    assert limiter.count == 5
    assert sum(slept) == pytest.approx(1.0)  # 5 requests at 4/s: the last one starts 1 s after the first
    unlimited = RateLimiter(0.0, clock=lambda: now[0], sleep=sleep)
    before = len(slept)
    for _ in range(3):
        unlimited.acquire()
    assert unlimited.count == 3 and len(slept) == before
