"""Quality layer tables: one declaration each (`pipelines/catalog.py`); the SQL is `quality_checks/sql/`.

No build step writes them: every expectation suite's asset checks (`quality_<suite>` in
`assets/checks.py`) append their results and quarantined records through `quality_checks/store.py`,
which creates the schema, both tables and both views first (`ensure_quality_schema`, in
`QUALITY_SQL_FILES` order).
"""

from __future__ import annotations

from pipelines.catalog import TableSpec
from quality_checks.store import (
    CHECK_RESULTS_FILE,
    CURRENT_QUARANTINE_FILE,
    QUARANTINE_FILE,
    QUARANTINED_RESPONSES_FILE,
)

TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        "quality.check_results",
        "One row per check per evaluation",
        (),  # append-only ledger: a retried step evaluates the same check twice under one run id
        "Append-only: run id, suite, the table checked, expectation, severity, success, counts, outcome "
        "(passed, warning, contained, blocking, skipped) and up to 20 offending keys (resource ids only). "
        "Never updated or deleted, so data quality can be trended run by run.",
        CHECK_RESULTS_FILE,
    ),
    TableSpec(
        "quality.quarantine",
        "One row per offending record of a failed row-level ERROR check per run",
        (),  # append-only ledger, kept whole; quality.current_quarantine is what counts now
        "Append-only: the check, the record's source and key, the reason and the offending row as JSON. "
        "A record leaves the current quarantine when a newer run of the same check no longer flags it.",
        QUARANTINE_FILE,
    ),
    TableSpec(
        "quality.current_quarantine",
        "One row per record quarantined by the newest evaluation of its check",
        ("table_name", "expectation_id", "source", "record_key"),
        "View over quality.quarantine and quality.check_results: the set downstream marts leave out.",
        CURRENT_QUARANTINE_FILE,
    ),
    TableSpec(
        "quality.quarantined_responses",
        "One row per response (source, response_id) currently quarantined from staging.measure_scores",
        ("source", "response_id"),
        "View over quality.current_quarantine: every check and reason of the response, for marts that "
        "prefer a ready key list.",
        QUARANTINED_RESPONSES_FILE,
    ),
)

WRITERS: dict[str, str] = {t.name: "asset checks quality_<suite> (assets/checks.py)" for t in TABLES}
