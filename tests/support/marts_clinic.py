"""Hand-built warehouses for the mart tests: tiny warehouses built from hand-written FHIR resources
and score rows (`Clinic`), the test pseudonym key (`KEY`) and the pseudonym of an id under it
(`key_of`). The helpers themselves are checked in tests/unit/test_marts_helpers.py.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import duckdb

from marts.settings import load_mart_settings
from pipelines.warehouse import ensure_raw_schema, table_for

KEY = b"unit-test-pseudonym-key-0123456789"

# The scoring contract's columns (docs of staging.measure_scores) with their types.
SCORE_COLUMNS: list[tuple[str, str]] = [
    ("source", "VARCHAR"),
    ("response_id", "VARCHAR"),
    ("version_id", "VARCHAR"),
    ("status", "VARCHAR"),
    ("questionnaire", "VARCHAR"),
    ("questionnaire_id", "VARCHAR"),
    ("instrument", "VARCHAR"),
    ("domain", "VARCHAR"),
    ("scale", "VARCHAR"),
    ("score", "DOUBLE"),
    ("scale_min", "DOUBLE"),
    ("scale_max", "DOUBLE"),
    ("items_answered", "INTEGER"),
    ("items_expected", "INTEGER"),
    ("is_valid", "BOOLEAN"),
    ("invalid_reason", "VARCHAR"),
    ("rater", "VARCHAR"),
    ("rater_basis", "VARCHAR"),
    ("reported_total", "DOUBLE"),
    ("reported_total_mismatch", "BOOLEAN"),
    ("severity_band", "VARCHAR"),
    ("risk_flag", "BOOLEAN"),
    ("authored_at", "TIMESTAMPTZ"),
    ("patient_ref", "VARCHAR"),
    ("encounter_ref", "VARCHAR"),
    ("practitioner_ref", "VARCHAR"),
    ("source_ref", "VARCHAR"),
    ("author_ref", "VARCHAR"),
    ("registry_file", "VARCHAR"),
    ("registry_version", "VARCHAR"),
    ("score_sources", "VARCHAR"),
    ("unmapped_answers", "INTEGER"),
]

DEFAULT_RATER = {"wai_therapist": "clinician"}


class Clinic:
    """A hand-built warehouse: add resources and scores, then `build()` the marts."""

    def __init__(self, source: str = "s") -> None:
        self.con = duckdb.connect()
        self.source = source
        ensure_raw_schema(self.con)
        self.con.execute("CREATE SCHEMA IF NOT EXISTS staging")
        cols = ", ".join(f"{n} {t}" for n, t in SCORE_COLUMNS)
        self.con.execute(f"CREATE TABLE staging.measure_scores ({cols})")
        self._n = 0

    # -- resources

    def add(
        self, resource: dict[str, Any], version: str = "1", last_updated: str = "2026-01-01T00:00:00Z"
    ) -> None:
        table = table_for(resource["resourceType"])
        self.con.execute(
            f"""INSERT INTO raw.{table} VALUES
                (?, ?, ?, ?, true, ?::TIMESTAMPTZ, 'h', ?::JSON, NULL, 'run', now(), false)""",
            [
                self.source,
                resource["resourceType"],
                resource["id"],
                version,
                last_updated,
                json.dumps(resource),
            ],
        )

    def patient(self, pid: str, birth: str = "1980-06-15", gender: str = "female") -> None:
        self.add(
            {
                "resourceType": "Patient",
                "id": pid,
                "gender": gender,
                "birthDate": birth,
                "name": [{"family": "Secret", "given": ["Name"]}],
            }
        )

    def episode(
        self,
        eid: str,
        pid: str,
        start: str,
        end: str | None = None,
        status: str = "finished",
        org: str = "c1",
    ) -> None:
        period = {"start": start, **({"end": end} if end else {})}
        self.add(
            {
                "resourceType": "EpisodeOfCare",
                "id": eid,
                "status": status,
                "patient": {"reference": f"Patient/{pid}"},
                "period": period,
                "managingOrganization": {"reference": f"Organization/{org}"},
            }
        )

    def encounter(
        self,
        enc: str,
        pid: str,
        day: str,
        eoc: str | None = None,
        practitioner: str = "Practitioner/t1",
        status: str = "finished",
        org: str | None = "c1",
        appointment: str | None = None,
    ) -> None:
        res: dict[str, Any] = {
            "resourceType": "Encounter",
            "id": enc,
            "status": status,
            "subject": {"reference": f"Patient/{pid}"},
            "participant": [{"individual": {"reference": practitioner}}],
            "period": {"start": f"{day}T10:00:00-05:00", "end": f"{day}T10:50:00-05:00"},
        }
        if eoc:
            res["episodeOfCare"] = [{"reference": f"EpisodeOfCare/{eoc}"}]
        if org:
            res["serviceProvider"] = {"reference": f"Organization/{org}"}
        if appointment:
            res["appointment"] = [{"reference": f"Appointment/{appointment}"}]
        self.add(res)

    def appointment(self, aid: str, pid: str, day: str, status: str, practitioner: str = "t1") -> None:
        self.add(
            {
                "resourceType": "Appointment",
                "id": aid,
                "status": status,
                "start": f"{day}T15:00:00Z",
                "participant": [
                    {"actor": {"reference": f"Patient/{pid}"}, "status": "accepted"},
                    {"actor": {"reference": f"Practitioner/{practitioner}"}, "status": "accepted"},
                ],
            }
        )

    def dispense(
        self,
        did: str,
        pid: str,
        day: str,
        days: int,
        code: str = "A",
        status: str = "completed",
        system: str = "rx",
    ) -> None:
        self.add(
            {
                "resourceType": "MedicationDispense",
                "id": did,
                "status": status,
                "medicationCodeableConcept": {"coding": [{"system": system, "code": code, "display": code}]},
                "subject": {"reference": f"Patient/{pid}"},
                "daysSupply": {"value": days, "unit": "d", "code": "d"},
                "whenHandedOver": f"{day}T12:00:00-05:00",
            }
        )

    # -- scores

    def score(
        self,
        instrument: str,
        enc: str | None,
        pid: str,
        scales: dict[str, float],
        *,
        authored: str = "2026-01-01T12:00:00Z",
        rater: str | None = None,
        response_id: str | None = None,
        valid: bool = True,
        status: str = "completed",
    ) -> str:
        """One response with the given scale scores (a row per scale, as staging.measure_scores has)."""
        self._n += 1
        rid = response_id or f"qr-{self._n}"
        for scale, value in scales.items():
            row = {
                "source": self.source,
                "response_id": rid,
                "version_id": "1",
                "status": status,
                "instrument": instrument,
                "scale": scale,
                "score": value if valid else None,
                "is_valid": valid,
                "rater": rater or DEFAULT_RATER.get(instrument, "patient"),
                "authored_at": authored,
                "patient_ref": f"Patient/{pid}",
                "encounter_ref": f"Encounter/{enc}" if enc else None,
            }
            names = list(row)
            self.con.execute(
                f"INSERT INTO staging.measure_scores ({', '.join(names)}) "
                f"VALUES ({', '.join('?' * len(names))})",
                list(row.values()),
            )
        return rid

    def wai(self, enc: str, pid: str, mean: float, **kw: Any) -> str:
        """A patient-rated WAI-SR response with every scale at `mean`."""
        return self.score(
            "wai_sr",
            enc,
            pid,
            {"total": mean * 12, "mean": mean, "goal": mean, "task": mean, "bond": mean},
            **kw,
        )

    def wai_clinician(self, enc: str, pid: str, mean: float, **kw: Any) -> str:
        return self.score(
            "wai_therapist",
            enc,
            pid,
            {"total": mean * 12, "mean": mean, "goal": mean, "task": mean, "bond": mean},
            **kw,
        )

    def total(self, instrument: str, enc: str, pid: str, value: float, **kw: Any) -> str:
        return self.score(instrument, enc, pid, {"total": value}, **kw)

    # -- build

    def build(self, reference_date: str = "2026-12-31", **settings: Any) -> dict[str, int]:
        from marts.build import build_marts

        s = load_mart_settings(env={}, reference_date=date.fromisoformat(reference_date), **settings)
        return build_marts(self.con, s, key=KEY)

    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        return self.con.execute(sql, params or []).fetchall()

    def dicts(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        cur = self.con.execute(sql, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def key_of(kind: str, rid: str, source: str = "s") -> str:
    """The pseudonym the marts give `rid` under the test key."""
    from marts.privacy import pseudonym

    out = pseudonym(KEY, kind, source, rid)
    assert out is not None
    return out


def two_therapists() -> Clinic:
    """t1 sees p1 (WAI means 3, 3) and p2 (4); t2 sees p3 (4) and p4 (5); p1 also has a clinician rating."""
    c = Clinic()
    plan = {"t1": {"p1": [3.0, 3.0], "p2": [4.0]}, "t2": {"p3": [4.0], "p4": [5.0]}}
    for t, patients in plan.items():
        for p, means in patients.items():
            c.patient(p)
            c.episode(f"eoc-{p}", p, "2026-03-01", "2026-03-31", org="c1" if t == "t1" else "c2")
            for i, m in enumerate(means, start=1):
                enc = f"{p}-{i}"
                c.encounter(
                    enc,
                    p,
                    f"2026-03-0{i}",
                    eoc=f"eoc-{p}",
                    practitioner=f"Practitioner/{t}",
                    org="c1" if t == "t1" else "c2",
                )
                c.wai(enc, p, m)
    c.wai_clinician("p1-1", "p1", 2.0)
    return c
