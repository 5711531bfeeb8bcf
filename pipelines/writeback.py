"""Write the pipeline's results back to a source's FHIR server as standard resources (docs/feedback.md).

Off by default; on per source (`writeback.enabled` in sources.yaml) with explicit write scopes. What
is written, in this order (each phase needs the server ids of the one before):

1. the pipeline itself as a **Device** (conditional create on its identifier), the author of every Flag;
2. a score **Observation** per scored response total: `status final` (`amended` for an amended
   response), `category survey`, LOINC 44261-6 (PHQ-9 total) or 70274-6 (GAD-7 total), else a local
   code of the pipeline's namespace; `subject`, `encounter`, `effectiveDateTime` = authored,
   `derivedFrom` = the QuestionnaireResponse, identifier `{system: namespace, value: "<response
   id>|<instrument>"}`. The first write is a conditional update on that identifier; later writes
   (an amended score, an entered-in-error response) update the Observation by the id the server gave,
   which also works on servers whose token search cannot match a `|` inside a value;
3. a **Flag** per open episode that is not on track or has an unrepaired alliance drop
   (`marts.feedback`), created with `ifNoneExist` on a derived identifier, pointing to the score that
   raised it (extension flag-detail), author the Device; set `inactive` when the episode is back on
   track or closed;
4. a **Task** on the treating practitioner's worklist for each Flag (`status requested`, `intent
   proposal`, `focus` the Flag, `for` the Patient, `owner` the PractitionerRole), created with
   `ifNoneExist` on the Flag's identifier and cancelled with it.

Every attempt is a row of `ops.writeback_log` (resource, identifier, outcome created / updated /
unchanged / failed, HTTP status). A resource whose content equals its last successful write is not
sent, so a second run with nothing new writes nothing; a failed write has no successful row and is
sent again next run, so nothing is lost. Writes travel as transaction Bundles of `batch_size`
entries through the source's hardened `FhirClient` (credentials only to the configured origin, the
retry policy). Dry run: the Bundles go to a JSON file instead, and the log is not touched. Python log
lines carry counts and HTTP statuses only, never an identifier of a patient.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from marts.context import MartContext, prepare_marts
from marts.feedback import NOT_ON_TRACK, OUTCOMES, feedback_rows
from pipelines.resources.fhir import FhirClient, FhirError
from pipelines.sqlfiles import query_records, run_sql
from pipelines.writeback_scopes import WritebackError, check_scopes

log = logging.getLogger("alliance_qi.writeback")

SQL_DIR = Path(__file__).resolve().parent / "sql" / "writeback"
LOINC = "http://loinc.org"
LOINC_TOTALS: dict[str, tuple[str, str]] = {
    "phq9": ("44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]"),
    "gad7": ("70274-6", "Generalized anxiety disorder 7 item (GAD-7) total score [Reported.PHQ]"),
}
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"
FLAG_DETAIL = "http://hl7.org/fhir/StructureDefinition/flag-detail"
FLAG_KINDS: dict[str, str] = {
    "not-on-track": "Not on track: outcome scores worse than expected for similar patients",
    "alliance-drop": "Alliance drop: a reliable drop in patient-rated alliance, not yet repaired",
}
DEVICE_IDENTIFIER = "alliance-qi-pipeline"
LOG_COLUMNS: tuple[str, ...] = (
    "run_id",
    "source",
    "resource_type",
    "identifier",
    "outcome",
    "http_status",
    "resource_id",
    "resource_status",
    "content_sha256",
    "resource",
    "detail",
)
_LOG_VIEW = "_writeback_attempts"


@dataclass(frozen=True)
class WritebackConfig:
    """How one source is written back to."""

    source: str
    namespace: str
    scopes: tuple[str, ...]
    batch_size: int = 50
    dry_run_file: Path | None = None
    # Instruments whose totals are written (None: every scored instrument)
    instruments: tuple[str, ...] | None = None

    @property
    def system(self) -> str:
        """The identifier system of every resource the pipeline writes."""
        return self.namespace.rstrip("/")


@dataclass
class Planned:
    """One resource to write: its type, identifier value, content and how to send it."""

    resource_type: str
    identifier: str
    resource: dict[str, Any]
    method: str  # PUT | POST
    url: str
    if_none_exist: str | None = None
    status: str | None = None

    @property
    def digest(self) -> str:
        """sha256 of the resource's canonical JSON (without the server's id)."""
        body = {k: v for k, v in self.resource.items() if k != "id"}
        return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def entry(self, full_url: str | None = None) -> dict[str, Any]:
        """The transaction Bundle entry."""
        request: dict[str, Any] = {"method": self.method, "url": self.url}
        if self.if_none_exist:
            request["ifNoneExist"] = self.if_none_exist
        out: dict[str, Any] = {"resource": self.resource, "request": request}
        if full_url:
            out["fullUrl"] = full_url
        return out


@dataclass
class WritebackResult:
    """Counts of one write-back run, by resource type and outcome."""

    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    planned: int = 0
    bundles: int = 0
    failed_bundles: int = 0
    dry_run_file: Path | None = None

    def count(self, resource_type: str | None = None, outcome: str | None = None) -> int:
        """Attempts of a type and/or outcome (all when None)."""
        return sum(
            n
            for (t, o), n in self.outcomes.items()
            if (resource_type is None or t == resource_type) and (outcome is None or o == outcome)
        )

    def as_dict(self) -> dict[str, Any]:
        """Counts as `{type: {outcome: n}}` plus totals (for Dagster metadata and the demo)."""
        by_type: dict[str, dict[str, int]] = {}
        for (t, o), n in sorted(self.outcomes.items()):
            by_type.setdefault(t, {})[o] = n
        return {
            "by_type": by_type,
            "planned": self.planned,
            "bundles": self.bundles,
            "failed_bundles": self.failed_bundles,
            "dry_run_file": str(self.dry_run_file) if self.dry_run_file else None,
        }


def escape_token(value: str) -> str:
    """A token search value with FHIR's escapes (`\\`, `|`, `,`, `$`)."""
    for ch in ("\\", "|", ",", "$"):
        value = value.replace(ch, "\\" + ch)
    return value


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(float(value), 4)


class Writeback:
    """One write-back run of one source: plan from the warehouse, send (or dry-run), log."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        config: WritebackConfig,
        run_id: str,
        client: FhirClient | None = None,
    ) -> None:
        if client is None and config.dry_run_file is None:
            raise WritebackError("a write-back needs a FHIR client, or a dry-run file")
        check_scopes(config.scopes)
        self.con = con
        self.config = config
        self.run_id = run_id
        self.client = client
        self.result = WritebackResult()
        self._dry_entries: list[dict[str, Any]] = []
        self._pending_log: list[dict[str, Any]] = []
        run_sql(con, SQL_DIR / "log_table.sql")
        self.state = {
            (str(r["resource_type"]), str(r["identifier"])): r
            for r in query_records(con, SQL_DIR / "state.sql", {"source": config.source})
        }

    # ---------------- references ----------------

    def _identifier(self, value: str) -> list[dict[str, str]]:
        return [{"system": self.config.system, "value": value}]

    def _search(self, value: str) -> str:
        return f"identifier={self.config.system}|{escape_token(value)}"

    def _known_id(self, resource_type: str, identifier: str) -> str | None:
        row = self.state.get((resource_type, identifier))
        return str(row["resource_id"]) if row and row.get("resource_id") else None

    def _reference(self, resource_type: str, identifier: str) -> str | None:
        """`Type/id` once the server holds it; in a dry run, the entry's urn:uuid in the same Bundle."""
        known = self._known_id(resource_type, identifier)
        if known:
            return f"{resource_type}/{known}"
        if self.config.dry_run_file is not None:
            return self._urn(resource_type, identifier)
        return None

    def _urn(self, resource_type: str, identifier: str) -> str:
        return (
            f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{self.config.system}/{resource_type}/{identifier}')}"
        )

    # ---------------- planning ----------------

    def plan_device(self) -> list[Planned]:
        """The pipeline as a Device (created once)."""
        if self._known_id("Device", DEVICE_IDENTIFIER):
            return []
        device = {
            "resourceType": "Device",
            "identifier": self._identifier(DEVICE_IDENTIFIER),
            "status": "active",
            "deviceName": [{"name": "alliance-qi pipeline", "type": "model-name"}],
            "type": {"text": "Measurement-based care analytics pipeline"},
        }
        return [
            Planned(
                "Device",
                DEVICE_IDENTIFIER,
                device,
                "POST",
                "Device",
                self._search(DEVICE_IDENTIFIER),
                "active",
            )
        ]

    def _observation(self, row: Mapping[str, Any], status: str) -> dict[str, Any]:
        instrument = str(row["instrument"])
        if instrument in LOINC_TOTALS:
            code, display = LOINC_TOTALS[instrument]
            coding = {"system": LOINC, "code": code, "display": display}
        else:
            coding = {
                "system": f"{self.config.system}/CodeSystem/instrument-score",
                "code": f"{instrument}-total",
                "display": f"{instrument} total score",
            }
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "identifier": self._identifier(f"{row['response_id']}|{instrument}"),
            "status": status,
            "category": [
                {"coding": [{"system": OBSERVATION_CATEGORY, "code": "survey", "display": "Survey"}]}
            ],
            "code": {"coding": [coding]},
            "subject": {"reference": row["patient_ref"]},
            "effectiveDateTime": _iso(row["authored_at"]),
            "valueQuantity": {
                "value": _number(float(row["score"])),
                "unit": "{score}",
                "system": "http://unitsofmeasure.org",
                "code": "{score}",
            },
            "derivedFrom": [{"reference": f"QuestionnaireResponse/{row['response_id']}"}],
        }
        if row.get("encounter_ref"):
            obs["encounter"] = {"reference": row["encounter_ref"]}
        return obs

    def _upsert(self, resource_type: str, identifier: str, resource: dict[str, Any], status: str) -> Planned:
        known = self._known_id(resource_type, identifier)
        if known:  # the server's id: an update of exactly this resource
            return Planned(
                resource_type,
                identifier,
                {**resource, "id": known},
                "PUT",
                f"{resource_type}/{known}",
                None,
                status,
            )
        return Planned(
            resource_type,
            identifier,
            resource,
            "PUT",
            f"{resource_type}?{self._search(identifier)}",
            None,
            status,
        )

    def plan_observations(self) -> list[Planned]:
        """Score Observations that are new or changed, and entered-in-error ones written before."""
        source = {"source": self.config.source}
        quarantined: set[str] = set()
        exists = query_records(
            self.con, SQL_DIR / "table_exists.sql", {"schema": "quality", "name": "current_quarantine"}
        )
        if exists and int(str(exists[0]["n"])) > 0:
            quarantined = {
                str(r["response_id"]) for r in query_records(self.con, SQL_DIR / "quarantined.sql", source)
            }
        planned: list[Planned] = []
        current: dict[str, dict[str, Any]] = {}
        for row in query_records(self.con, SQL_DIR / "scores.sql", source):
            if str(row["response_id"]) in quarantined:
                continue
            if self.config.instruments is not None and row["instrument"] not in self.config.instruments:
                continue
            status = "amended" if row["status"] == "amended" else "final"
            identifier = f"{row['response_id']}|{row['instrument']}"
            obs = self._observation(row, status)
            current[identifier] = obs
            planned.append(self._upsert("Observation", identifier, obs, status))
        withdrawn = {
            str(r["response_id"]) for r in query_records(self.con, SQL_DIR / "withdrawn.sql", source)
        }
        for (rtype, identifier), row in self.state.items():
            response_id = identifier.rsplit("|", 1)[0]
            if rtype != "Observation" or response_id not in withdrawn or identifier in current:
                continue
            if row["resource_status"] == "entered-in-error" or not row.get("resource"):
                continue
            previous = json.loads(str(row["resource"]))
            planned.append(
                self._upsert(
                    "Observation", identifier, {**previous, "status": "entered-in-error"}, "entered-in-error"
                )
            )
        return [p for p in planned if self._changed(p)]

    def _changed(self, p: Planned) -> bool:
        row = self.state.get((p.resource_type, p.identifier))
        return row is None or row["content_sha256"] != p.digest

    def _roles(self) -> dict[str, str]:
        return {
            str(r["practitioner_id"]): str(r["role_id"])
            for r in query_records(self.con, SQL_DIR / "roles.sql", {"source": self.config.source})
        }

    def feedback(self, mart_ctx: MartContext) -> list[dict[str, Any]]:
        """The judged open episodes of this source (marts.feedback)."""
        prepare_marts(self.con, mart_ctx)
        rows, _ = feedback_rows(self.con, mart_ctx)
        return [r for r in rows if r["source"] == self.config.source]

    def _wanted_flags(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """Identifier -> what the Flag says, for each episode that needs one now."""
        wanted: dict[str, dict[str, Any]] = {}
        for r in rows:
            if r["flag"] == NOT_ON_TRACK:
                evidence = next(
                    (
                        (f"{r[f'{o.instrument}_response_id']}|{o.instrument}", r[f"{o.instrument}_date"])
                        for o in OUTCOMES
                        if r[f"{o.instrument}_flag"] == NOT_ON_TRACK
                    ),
                    (None, r["latest_session_date"]),
                )
                wanted[f"not-on-track.{r['episode_id']}"] = {
                    "kind": "not-on-track",
                    "row": r,
                    "evidence": evidence[0],
                    "start": evidence[1],
                }
            if r["alliance_drop_alert"]:
                wanted[f"alliance-drop.{r['episode_id']}"] = {
                    "kind": "alliance-drop",
                    "row": r,
                    "evidence": None,
                    "start": r["alliance_drop_date"],
                }
        return wanted

    def plan_flags(self, rows: Sequence[Mapping[str, Any]]) -> list[Planned]:
        """Flags to create, re-activate or set inactive."""
        device = self._reference("Device", DEVICE_IDENTIFIER)
        planned: list[Planned] = []
        wanted = self._wanted_flags(rows)
        for identifier, want in wanted.items():
            known = self.state.get(("Flag", identifier))
            if known is not None and known["resource_status"] == "active":
                continue  # raised already: nothing new to say
            r, kind = want["row"], want["kind"]
            flag: dict[str, Any] = {
                "resourceType": "Flag",
                "identifier": self._identifier(identifier),
                "status": "active",
                "category": [
                    {"coding": [{"system": FLAG_CATEGORY, "code": "clinical", "display": "Clinical"}]}
                ],
                "code": {
                    "coding": [
                        {
                            "system": f"{self.config.system}/CodeSystem/feedback-flag",
                            "code": kind,
                            "display": FLAG_KINDS[kind],
                        }
                    ],
                    "text": FLAG_KINDS[kind],
                },
                "subject": {"reference": f"Patient/{r['patient_id']}"},
                "period": {"start": _iso(want["start"])},
            }
            if device:
                flag["author"] = {"reference": device}
            evidence = want["evidence"] and self._reference("Observation", want["evidence"])
            if evidence:
                flag["extension"] = [{"url": FLAG_DETAIL, "valueReference": {"reference": evidence}}]
            if known is None:
                planned.append(
                    Planned("Flag", identifier, flag, "POST", "Flag", self._search(identifier), "active")
                )
            else:
                planned.append(self._upsert("Flag", identifier, flag, "active"))
        for (rtype, identifier), row in self.state.items():
            if (
                rtype != "Flag"
                or identifier in wanted
                or row["resource_status"] != "active"
                or not row.get("resource")
            ):
                continue  # back on track (or the episode closed): the Flag is no longer current
            previous = json.loads(str(row["resource"]))
            period = {**previous.get("period", {}), "end": date.today().isoformat()}
            planned.append(
                self._upsert(
                    "Flag", identifier, {**previous, "status": "inactive", "period": period}, "inactive"
                )
            )
        return planned

    def plan_tasks(self, rows: Sequence[Mapping[str, Any]]) -> list[Planned]:
        """A Task per active Flag (created once), cancelled when its Flag is inactive."""
        roles = self._roles()
        by_episode = {f"{k}.{r['episode_id']}": r for r in rows for k in FLAG_KINDS}
        planned: list[Planned] = []
        for (rtype, identifier), flag_row in self.state.items():
            if rtype != "Flag":
                continue
            task_state = self.state.get(("Task", identifier))
            if flag_row["resource_status"] == "active":
                if task_state is not None and task_state["resource_status"] == "requested":
                    continue
                r = by_episode.get(identifier)
                if r is None:
                    continue
                kind = identifier.split(".", 1)[0]
                task: dict[str, Any] = {
                    "resourceType": "Task",
                    "identifier": self._identifier(identifier),
                    "status": "requested",
                    "intent": "proposal",
                    "priority": "routine",
                    "code": {"text": "Review in clinical supervision"},
                    "description": FLAG_KINDS[kind],
                    "focus": {"reference": f"Flag/{flag_row['resource_id']}"},
                    "for": {"reference": f"Patient/{r['patient_id']}"},
                    "authoredOn": _iso(datetime.now().astimezone()),
                }
                role = roles.get(str(r["practitioner_id"]))
                if role:
                    task["owner"] = {"reference": f"PractitionerRole/{role}"}
                elif r["practitioner_id"]:
                    task["owner"] = {"reference": f"Practitioner/{r['practitioner_id']}"}
                if task_state is None:
                    planned.append(
                        Planned(
                            "Task", identifier, task, "POST", "Task", self._search(identifier), "requested"
                        )
                    )
                else:
                    planned.append(self._upsert("Task", identifier, task, "requested"))
            elif (
                task_state is not None
                and task_state["resource_status"] == "requested"
                and task_state.get("resource")
            ):
                previous = json.loads(str(task_state["resource"]))
                planned.append(
                    self._upsert("Task", identifier, {**previous, "status": "cancelled"}, "cancelled")
                )
        return planned

    # ---------------- sending ----------------

    def send(self, planned: Sequence[Planned]) -> None:
        """Send in transaction Bundles of `batch_size` (or keep them for the dry-run file); log each."""
        self.result.planned += len(planned)
        for start in range(0, len(planned), self.config.batch_size):
            batch = list(planned[start : start + self.config.batch_size])
            if self.config.dry_run_file is not None:
                self._dry_entries.extend(p.entry(self._urn(p.resource_type, p.identifier)) for p in batch)
                continue
            try:
                self._send_bundle(batch)
            finally:
                self._flush_log()

    def _send_bundle(self, batch: list[Planned]) -> None:
        assert self.client is not None  # noqa: S101 - a client is required unless dry-running
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [p.entry() for p in batch]}
        self.result.bundles += 1
        try:
            response = self.client.request("POST", self.client.base_url, json=bundle)
            body = self.client.json_object(response, "POST")
        except FhirError as exc:
            self.result.failed_bundles += 1
            status = getattr(exc, "status", None)
            # the error's text may quote the server; it stays in the warehouse's log table only
            detail = self.client.mask(str(exc))[:500]
            log.warning(
                "write-back bundle of %d entries failed (HTTP %s); retried next run", len(batch), status
            )
            for p in batch:
                self._log(p, "failed", status, None, detail)
            return
        entries = body.get("entry") or []
        for i, p in enumerate(batch):
            answer = (
                (entries[i].get("response") or {})
                if i < len(entries) and isinstance(entries[i], dict)
                else {}
            )
            code = _status_code(answer.get("status"))
            rid = _id_from_location(answer.get("location"), p.resource_type) or (
                p.resource.get("id") if isinstance(p.resource.get("id"), str) else None
            )
            if code is None or code >= 400:
                self._log(p, "failed", code, None, "no success status for this entry")
            elif code == 201:
                self._log(p, "created", code, rid)
            elif p.method == "POST":  # ifNoneExist matched: the server already had it
                self._log(p, "unchanged", code, rid)
            else:
                self._log(p, "updated", code, rid)

    def _log(
        self, p: Planned, outcome: str, status: int | None, rid: str | None, detail: str | None = None
    ) -> None:
        self.result.outcomes[(p.resource_type, outcome)] += 1
        resource = json.dumps({**p.resource, "id": rid} if rid else p.resource)
        self._pending_log.append(
            {
                "run_id": self.run_id,
                "source": self.config.source,
                "resource_type": p.resource_type,
                "identifier": p.identifier,
                "outcome": outcome,
                "http_status": status,
                "resource_id": rid,
                "resource_status": p.status,
                "content_sha256": p.digest,
                "resource": resource,
                "detail": detail,
            }
        )
        if outcome != "failed":
            self.state[(p.resource_type, p.identifier)] = self._pending_log[-1]

    def _flush_log(self) -> None:
        """Append the attempts logged since the last flush (one INSERT per Bundle)."""
        if not self._pending_log:
            return
        frame = pd.DataFrame(self._pending_log, columns=LOG_COLUMNS, dtype=object)
        self.con.register(_LOG_VIEW, frame)
        try:
            run_sql(self.con, SQL_DIR / "log_insert.sql", identifiers={"rows": _LOG_VIEW})
        finally:
            self.con.unregister(_LOG_VIEW)
        self._pending_log = []

    def run(self, mart_ctx: MartContext) -> WritebackResult:
        """Device, Observations, Flags, Tasks: each phase planned after the one before has been written."""
        rows = self.feedback(mart_ctx)
        self.send(self.plan_device())
        self.send(self.plan_observations())
        self.send(self.plan_flags(rows))
        if self.config.dry_run_file is not None:
            # Tasks point at their Flag by id, which a dry run never gets: the Flags' urn:uuids stand in
            for p in self.plan_flags(rows):
                self.state.setdefault(
                    ("Flag", p.identifier),
                    {
                        "resource_id": None,
                        "resource_status": "active",
                        "content_sha256": "",
                        "resource": None,
                    },
                )
        tasks = self.plan_tasks(rows)
        if self.config.dry_run_file is not None:
            for t in tasks:
                if t.resource.get("focus", {}).get("reference") == "Flag/None":
                    t.resource["focus"] = {"reference": self._urn("Flag", t.identifier)}
        self.send(tasks)
        if self.config.dry_run_file is not None:
            path = self.config.dry_run_file
            path.parent.mkdir(parents=True, exist_ok=True)
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": self._dry_entries}
            path.write_text(json.dumps(bundle, indent=1))
            self.result.dry_run_file = path
        log.info(
            "write-back of source %s: %s",
            self.config.source,
            ", ".join(f"{t} {o}: {n}" for (t, o), n in sorted(self.result.outcomes.items()))
            or "nothing to write",
        )
        return self.result


def _status_code(text: Any) -> int | None:
    try:
        return int(str(text).split()[0])
    except (ValueError, IndexError):
        return None


def _id_from_location(location: Any, resource_type: str) -> str | None:
    """The id in `.../Type/id/_history/v` (or `Type/id`)."""
    if not isinstance(location, str):
        return None
    parts = location.split("/")
    for i in range(len(parts) - 1):
        if parts[i] == resource_type and parts[i + 1]:
            return parts[i + 1]
    return None


def write_back(
    con: duckdb.DuckDBPyConnection,
    config: WritebackConfig,
    mart_ctx: MartContext,
    *,
    run_id: str,
    client: FhirClient | None = None,
) -> WritebackResult:
    """Write one source's scores, Flags and Tasks back (or to `config.dry_run_file`); see the module doc."""
    return Writeback(con, config, run_id, client).run(mart_ctx)


def writeback_summary(con: duckdb.DuckDBPyConnection, run_id: str) -> str:
    """The run's write-back attempts as text lines (source, type, outcome counts), for the demo."""
    run_sql(con, SQL_DIR / "log_table.sql")
    rows = query_records(con, SQL_DIR / "summary.sql", {"run_id": run_id})
    if not rows:
        return "Write-back: nothing written (not enabled, or nothing new)."
    lines = ["Write-back to the FHIR server (ops.writeback_log):"]
    lines += [f"  {r['source']}: {r['resource_type']:<12} {r['outcome']:<10} {r['attempts']}" for r in rows]
    return "\n".join(lines)


def forget_written(con: duckdb.DuckDBPyConnection, source: str) -> None:
    """Drop `source`'s write-back log: for a server replaced by an empty one (the demo's fresh server)."""
    run_sql(con, SQL_DIR / "log_table.sql")
    run_sql(con, SQL_DIR / "forget_source.sql", {"source": source})
