"""Put a generated clinic on a FHIR server (transaction Bundles) or into a Bulk-style NDJSON folder.

Server loading uses `PUT Type/id` entries so the generator's readable ids survive, phase by phase:
phase 0 creates every resource (version 1), phase 1 then updates some of them (version 2), which is
how amended and entered-in-error responses get a real version history on the server.

Loading is *not* idempotent on a server that versions every write (sekmet-fhir does): loading the
same data twice gives every resource one more version. So a failed transaction is never retried
here; start from an empty server instead (transactions are atomic, so a failed bundle leaves
nothing half-written).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import requests

from demo.generator import LOAD_ORDER, GeneratedData, Resource

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
# (connect, read) seconds. A 500-entry transaction takes about a second on sekmet-fhir; the read
# timeout leaves room for a slow disk without letting a hung server block a test run forever.
DEFAULT_TIMEOUT = (5.0, 120.0)


class LoadError(RuntimeError):
    """A bundle was refused or its response did not confirm every entry."""


def _ordered(phase: list[Resource]) -> list[Resource]:
    rank = {t: i for i, t in enumerate(LOAD_ORDER)}
    return sorted(phase, key=lambda r: rank.get(r["resourceType"], len(rank)))  # stable within a type


def _bundle(base_url: str, resources: list[Resource]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"{base_url}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in resources
        ],
    }


def _diagnostics(resp: requests.Response) -> str:
    """The server's own words: OperationOutcome diagnostics when present, else the start of the body."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:500]
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        issues = body.get("issue") or []
        return "; ".join(str(i.get("diagnostics") or i.get("details", {}).get("text") or i) for i in issues)[
            :1000
        ]
    return json.dumps(body)[:500]


def load_to_server(
    base_url: str,
    data: GeneratedData,
    session: requests.Session | None = None,
    batch_size: int = 500,
    headers: Mapping[str, str] | None = None,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """POST `data` to `base_url` as transaction Bundles of PUT entries, phase by phase.

    Within a phase, resources go in `LOAD_ORDER` (referenced types first) in bundles of at most
    `batch_size` entries. Raises `LoadError` naming the bundle (phase, number, first and last
    entry) when the server refuses one or its response does not account for every entry.
    Returns counts: bundles, entries and entries per resourceType and per phase.
    """
    base = base_url.rstrip("/")
    own_session = session is None
    http = session or requests.Session()
    send_headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON, **(headers or {})}
    by_type: Counter[str] = Counter()
    per_phase: list[int] = []
    bundles = 0
    try:
        for phase_no, phase in enumerate(data.versions):
            ordered = _ordered(phase)
            chunks = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
            for n, chunk in enumerate(chunks, start=1):
                first, last = chunk[0], chunk[-1]
                name = (
                    f"phase {phase_no} bundle {n}/{len(chunks)} ({len(chunk)} entries, "
                    f"{first['resourceType']}/{first['id']} .. {last['resourceType']}/{last['id']})"
                )
                try:
                    resp = http.post(
                        base, data=orjson.dumps(_bundle(base, chunk)), headers=send_headers, timeout=timeout
                    )
                except requests.RequestException as exc:
                    raise LoadError(f"{name}: request to {base} failed: {exc}") from exc
                if resp.status_code >= 400:
                    raise LoadError(f"{name}: HTTP {resp.status_code} from {base}: {_diagnostics(resp)}")
                body = resp.json()
                entries = body.get("entry") or []
                if body.get("type") != "transaction-response" or len(entries) != len(chunk):
                    raise LoadError(f"{name}: expected a transaction-response with {len(chunk)} entries")
                refused = [
                    f"{r['resourceType']}/{r['id']}: {e.get('response', {}).get('status')}"
                    for r, e in zip(chunk, entries, strict=True)
                    if not str(e.get("response", {}).get("status", "")).startswith(("200", "201"))
                ]
                if refused:
                    raise LoadError(f"{name}: entries not stored: {', '.join(refused[:10])}")
                bundles += 1
                by_type.update(r["resourceType"] for r in chunk)
                log.debug("loaded %s", name)
            per_phase.append(len(ordered))
    finally:
        if own_session:
            http.close()
    return {
        "bundles": bundles,
        "entries": sum(per_phase),
        "phases": per_phase,
        "by_type": {t: by_type[t] for t in LOAD_ORDER if by_type[t]},
    }


def _strip_meta(resource: Resource) -> Resource:
    return {k: v for k, v in resource.items() if k != "meta"}


def verify_on_server(
    base_url: str,
    data: GeneratedData,
    session: requests.Session | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
) -> list[str]:
    """Read back every resource the manifest lists as mess and compare it with what was sent.

    Returns a list of problems (empty when the server kept each one exactly, under its own id, with
    the expected versionId). This is how we know the server stores invalid resources as given.
    """
    base = base_url.rstrip("/")
    own_session = session is None
    http = session or requests.Session()
    send_headers = {"Accept": FHIR_JSON, **(headers or {})}
    latest = data.latest()
    version_count = Counter((r["resourceType"], r["id"]) for phase in data.versions for r in phase)
    problems: list[str] = []
    try:
        for entry in data.manifest["mess"]:
            key = (entry["resourceType"], entry["id"])
            url = f"{base}/{key[0]}/{key[1]}"
            resp = http.get(url, headers=send_headers, timeout=timeout)
            if resp.status_code != 200:
                problems.append(f"{key[0]}/{key[1]} ({entry['kind']}): HTTP {resp.status_code}")
                continue
            got = resp.json()
            want_version = str(version_count[key])
            if str(got.get("meta", {}).get("versionId")) != want_version:
                problems.append(
                    f"{key[0]}/{key[1]} ({entry['kind']}): versionId {got.get('meta', {}).get('versionId')} "
                    f"!= {want_version}"
                )
            if _strip_meta(got) != _strip_meta(latest[key]):
                problems.append(
                    f"{key[0]}/{key[1]} ({entry['kind']}): stored content differs from what was sent"
                )
    finally:
        if own_session:
            http.close()
    return problems


def write_ndjson(folder: Path, data: GeneratedData) -> dict[str, Any]:
    """Write Bulk-style `<ResourceType>.ndjson` files and `manifest.json` into `folder`.

    Each line is one resource version, in version order, stamped with `meta.versionId` and
    `meta.lastUpdated` (as an export would; resources sent to a server carry neither). Output is
    byte-identical for identical data. Returns {type: line count} plus the written paths.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[bytes]] = {t: [] for t in LOAD_ORDER}
    for version_id, res in data.iter_versions():
        stamp = data.last_updated[f"{res['resourceType']}/{res['id']}/_history/{version_id}"]
        out: Resource = {"resourceType": res["resourceType"], "id": res["id"]}
        out["meta"] = {**res.get("meta", {}), "versionId": version_id, "lastUpdated": stamp}
        out.update((k, v) for k, v in res.items() if k not in ("resourceType", "id", "meta"))
        lines.setdefault(res["resourceType"], []).append(orjson.dumps(out))
    written: dict[str, int] = {}
    for rtype, rows in lines.items():
        if not rows:
            continue
        (folder / f"{rtype}.ndjson").write_bytes(b"\n".join(rows) + b"\n")
        written[rtype] = len(rows)
    manifest = {
        **data.manifest,
        "ndjson": {t: {"file": f"{t}.ndjson", "lines": n} for t, n in written.items()},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return {"folder": str(folder), "lines": written, "manifest": str(folder / "manifest.json")}


#: The id of the clinic's cohort Group the demo creates (what an EHR administrator hands a clinic).
CLINIC_GROUP_ID = "clinic"


def clinic_group(patient_ids: list[str], group_id: str = CLINIC_GROUP_ID) -> Resource:
    """The clinic's cohort as a FHIR Group of Patients (`member.entity` references)."""
    return {
        "resourceType": "Group",
        "id": group_id,
        "type": "person",
        "actual": True,
        "name": "Alliance QI clinic cohort",
        "quantity": len(patient_ids),
        "member": [{"entity": {"reference": f"Patient/{pid}"}} for pid in patient_ids],
    }


def put_group(
    base_url: str,
    patient_ids: list[str],
    group_id: str = CLINIC_GROUP_ID,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
) -> None:
    """Create or replace the clinic's Group on the server (an update-as-create PUT)."""
    resp = requests.put(
        f"{base_url.rstrip('/')}/Group/{group_id}",
        data=orjson.dumps(clinic_group(patient_ids, group_id)),
        headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
        timeout=timeout,
    )
    if resp.status_code >= 400:
        raise LoadError(f"Group/{group_id}: HTTP {resp.status_code}: {_diagnostics(resp)}")


def patient_ids_of(data: GeneratedData) -> list[str]:
    """The generated clinic's Patient ids (sorted)."""
    return sorted({str(r["id"]) for phase in data.versions for r in phase if r["resourceType"] == "Patient"})
