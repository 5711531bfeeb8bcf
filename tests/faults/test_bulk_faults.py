"""Bulk Data `$export` faults: a malformed manifest, then the same export resumed after the fault.

Only the QuestionnaireResponse asset runs (each Bulk pull polls a real export job, which costs
seconds), and its table is compared with the clean run's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.faults.proxy import FaultProxy, Mutate
from tests.faults.support import landing_file, run_raw, snapshot, source, step_errors

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # starts FHIR server processes

QR_TYPE = ("QuestionnaireResponse",)
STATUS = r"/fhir/bulk-status/"
KICK_OFF = r"/fhir/\$export$"


def _drop_output_url(manifest: Any) -> Any:
    """Break the QuestionnaireResponse manifest: its first output item loses its `url`."""
    outputs = manifest.get("output") or []
    if outputs and outputs[0].get("type") == "QuestionnaireResponse":
        outputs[0].pop("url", None)
    return manifest


def test_malformed_manifest_fails_clearly_and_the_rerun_resumes_the_same_export(
    tmp_path: Path, proxy: FaultProxy, clean
) -> None:
    warehouse = tmp_path / "w.duckdb"
    fhir = source(proxy.base_url, kind="bulk", landing_dir=str(tmp_path / "landing"))
    rule = proxy.add(Mutate(_drop_output_url), STATUS, times=None)
    failed = run_raw(fhir, warehouse, QR_TYPE)
    assert not failed.success and rule.fired >= 1  # fired counts every poll (202s pass unchanged)
    # Fatal: the saved job answers the same manifest every time, so the step is not retried.
    assert len(proxy.seen(STATUS, status=200)) == 1
    messages = step_errors(failed)["raw__questionnaire_response"]
    assert len(messages) == 1
    for message in messages:
        assert "malformed bulk manifest: output[0] lacks type or url" in message, message
        assert f"{proxy.origin}/fhir/bulk-status/" in message  # names the status URL polled
    # The job is remembered (raw.bulk_jobs), so the rerun resumes it: one kick-off only.
    assert len(proxy.seen(KICK_OFF)) == 1
    # Bulk state is kept in the source's landing file; nothing reached the warehouse.
    with duckdb.connect(str(landing_file(warehouse, QR_TYPE[0])), read_only=True) as con:
        saved = con.execute("SELECT key FROM raw.bulk_jobs").fetchall()
        landed = con.execute("SELECT count(*) FROM raw.questionnaire_response").fetchall()[0][0]
    assert saved == [("faults:QuestionnaireResponse",)] and landed == 0

    proxy.clear()
    rerun = run_raw(fhir, warehouse, QR_TYPE)
    assert rerun.success
    assert len(proxy.seen(KICK_OFF)) == 1  # still the one export, finished and downloaded now
    assert [e.method for e in proxy.seen(STATUS) if e.method == "DELETE"] == ["DELETE"]  # job released
    snap = snapshot(warehouse)
    snap.assert_equals(clean, QR_TYPE)
    with duckdb.connect(str(landing_file(warehouse, QR_TYPE[0])), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.bulk_jobs").fetchall()[0][0] == 0
    with duckdb.connect(str(warehouse), read_only=True) as con:
        modes = {r[0] for r in con.execute("SELECT DISTINCT pull_mode FROM raw.fetch_log").fetchall()}
    assert modes == {"bulk_export"}
