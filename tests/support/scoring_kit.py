"""A tiny in-memory warehouse for scoring tests: land Questionnaires and responses, run the real
staging and scoring SQL, read the results back by response id."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from demo.forms import FORMS, canonical_for, response_items
from fhir_mappings.flatten import build_questionnaire_answers
from fhir_mappings.questionnaires import build_questionnaire_tables
from fhir_mappings.registry import Instrument, load_registry
from fhir_mappings.scoring import build_measure_scores
from pipelines.warehouse import ensure_raw_schema

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
# One clock for every ScoringDB, so versions landed later (even by another instance) are newer.
_TICKS = itertools.count(1)


class ScoringDB:
    """Raw rows in, `staging.measure_scores` / unmapped / excluded out."""

    def __init__(
        self, registry: dict[str, Instrument] | None = None, source: str = "site", path: str = ":memory:"
    ) -> None:
        self.con = duckdb.connect(path)
        ensure_raw_schema(self.con)
        self.registry = registry
        self.source = source
        self.counts: dict[str, int] = {}

    def _land(self, table: str, resource: dict[str, Any], version: str, source: str | None) -> None:
        text = json.dumps(resource)
        self.con.execute(
            f"""INSERT INTO raw.{table} VALUES (?, ?, ?, ?, true, ?, ?, ?, 'test', 'run', now(), false)""",
            [
                source or self.source,
                resource["resourceType"],
                resource["id"],
                version,
                T0 + timedelta(seconds=next(_TICKS)),
                hashlib.sha256(text.encode()).hexdigest(),
                text,
            ],
        )

    def questionnaire(self, q: dict[str, Any], version: str = "1", source: str | None = None) -> None:
        self._land("questionnaire", q, version, source)

    def forms(self, *form_ids: str) -> None:
        for fid in form_ids or tuple(FORMS):
            self.questionnaire(copy.deepcopy(FORMS[fid]))

    def response(self, qr: dict[str, Any], version: str = "1", source: str | None = None) -> None:
        self._land("questionnaire_response", qr, version, source)

    def score(self) -> dict[str, int]:
        build_questionnaire_answers(self.con)
        build_questionnaire_tables(self.con)
        self.counts = build_measure_scores(self.con, self.registry or load_registry())
        return self.counts

    def rows(self, response_id: str) -> dict[str, dict[str, Any]]:
        """measure_scores rows of one response, by scale."""
        cur = self.con.execute("SELECT * FROM staging.measure_scores WHERE response_id = ?", [response_id])
        cols = [d[0] for d in cur.description]
        return {r[cols.index("scale")]: dict(zip(cols, r, strict=True)) for r in cur.fetchall()}

    def total(self, response_id: str) -> dict[str, Any]:
        return self.rows(response_id)["total"]

    def one(self, table: str, response_id: str) -> dict[str, Any] | None:
        cur = self.con.execute(f"SELECT * FROM staging.{table} WHERE response_id = ?", [response_id])
        cols = [d[0] for d in cur.description]
        got = cur.fetchall()
        return dict(zip(cols, got[0], strict=True)) if got else None


def qr(
    rid: str,
    form_id: str,
    values: Iterable[int | bool | None],
    *,
    total: int | None = None,
    status: str = "completed",
    source: str | None = "Patient/p1",
    author: str | None = None,
    questionnaire: str | None = None,
    difficulty: int | None = None,
) -> dict[str, Any]:
    """A response to one of the demo forms, built with the generator's own form layout."""
    res: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "id": rid,
        "questionnaire": questionnaire if questionnaire is not None else canonical_for(form_id),
        "status": status,
        "subject": {"reference": "Patient/p1"},
        "encounter": {"reference": "Encounter/e1"},
        "authored": "2026-01-05T10:00:00Z",
        "item": response_items(form_id, list(values), total, difficulty),
    }
    if source:
        res["source"] = {"reference": source}
    if author:
        res["author"] = {"reference": author}
    return res
