"""Load a small generated clinic into the real FHIR server (sekmet-fhir) and read it back.

Proves the loader keeps the generator's ids (PUT in transactions), that the server stores the
planted invalid resources exactly as given (inbound validation off, as EHR servers behave), and that
phase-1 updates become version 2 on the server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from demo.generator import LOAD_ORDER, GeneratorConfig, generate
from demo.loader import load_to_server, verify_on_server
from demo.server import running_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # starts FHIR server processes

TIMEOUT = (5, 60)


def _all_ids(http: requests.Session, base: str, rtype: str) -> tuple[set[str], int]:
    """Page through `GET {base}/{rtype}?_count=200` following next links; return ids and rows seen."""
    ids: set[str] = set()
    rows = 0
    url: str | None = f"{base}/{rtype}?_count=200"
    while url:
        resp = http.get(url, timeout=TIMEOUT)
        resp.raise_for_status()
        page = resp.json()
        entries = page.get("entry") or []
        if not entries:  # some servers send a next link to an empty page
            break
        rows += len(entries)
        ids.update(e["resource"]["id"] for e in entries)
        url = next((link["url"] for link in page.get("link", []) if link["relation"] == "next"), None)
    return ids, rows


def test_load_small_clinic_and_read_it_back(tmp_path: Path) -> None:
    data = generate(GeneratorConfig(patients=20, seed=11, mess_rate=0.05))
    manifest = data.manifest
    with running_server(tmp_path / "fhir") as srv, requests.Session() as http:
        base = srv.base_url
        counts = load_to_server(base, data, session=http, batch_size=300)
        assert counts["entries"] == sum(manifest["version_count"].values())
        assert counts["phases"] == [len(p) for p in data.versions]

        for rtype in LOAD_ORDER:
            ids, rows = _all_ids(http, base, rtype)
            assert len(ids) == manifest["counts"][rtype], rtype
            assert rows == len(ids), f"{rtype}: a page repeated a resource"
            assert ids == {r["id"] for r in data.of_type(rtype)}, f"{rtype}: ids not kept"

        def read(rtype: str, rid: str) -> dict[str, Any]:
            resp = http.get(f"{base}/{rtype}/{rid}", timeout=TIMEOUT)
            resp.raise_for_status()
            body: dict[str, Any] = resp.json()
            return body

        amended = next(m for m in manifest["mess"] if m["kind"] == "amended")
        qr = read("QuestionnaireResponse", amended["id"])
        assert qr["meta"]["versionId"] == "2"
        assert qr["status"] == "amended"
        v1 = http.get(f"{base}/QuestionnaireResponse/{amended['id']}/_history/1", timeout=TIMEOUT).json()
        assert v1["status"] == "completed" and v1["item"] != qr["item"]

        eie = next(m for m in manifest["mess"] if m["kind"] == "entered_in_error")
        assert read("QuestionnaireResponse", eie["id"])["status"] == "entered-in-error"

        # Structurally invalid resources are stored as given: the pipeline, not the server, rejects them.
        by_element = {m["element"]: m for m in manifest["mess"] if m["kind"] == "invalid_structure"}
        assert read("Patient", by_element["Patient.birthDate"]["id"])["birthDate"].endswith("-13-45")
        assert "status" not in read("Encounter", by_element["Encounter.status"]["id"])
        assert read("QuestionnaireResponse", by_element["QuestionnaireResponse.authored"]["id"])[
            "authored"
        ] == ("last tuesday")
        lhc = read("Questionnaire", "phq-9-lhc")
        assert lhc["item"][2]["answerOption"][1]["extension"][0]["valueString"] == 1

        # Every planted resource comes back exactly as sent, with the expected versionId.
        assert verify_on_server(base, data, session=http) == []
