"""Folder reader: NDJSON lines, JSON resources and Bundles, broken input reported with its origin."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.resources.fhir import iter_folder


def write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def test_ndjson_bundle_and_broken_lines(tmp_path: Path) -> None:
    write(
        tmp_path / "b.ndjson",
        "\n".join(
            [
                json.dumps({"resourceType": "QuestionnaireResponse", "id": "q1"}),
                "",  # blank: skipped, but line numbers still count it
                '{"resourceType": "QuestionnaireResponse", "id": ',  # cut off
                json.dumps([1, 2]),
                json.dumps({"id": "no-type"}),
                json.dumps({"resourceType": "QuestionnaireResponse", "id": "q2"}),  # no trailing newline
            ]
        ),
    )
    write(
        tmp_path / "a.json",
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [
                    {"resource": {"resourceType": "Questionnaire", "id": "phq9"}},
                    {"fullUrl": "urn:uuid:1"},
                    {"resource": {"resourceType": "Patient", "id": "p1"}},
                ],
            }
        ),
    )
    write(tmp_path / "c.json", json.dumps({"resourceType": "Patient", "id": "p2"}))
    write(tmp_path / "d.json", "{not json")
    write(tmp_path / "notes.txt", "ignored")
    encounter = json.dumps({"resourceType": "Encounter", "id": "e1"}).encode()
    write(tmp_path / "sub" / "e.ndjson", b"\xef\xbb\xbf" + encounter + b"\r\n")

    items = list(iter_folder(tmp_path))
    summary = [((r or {}).get("id"), origin, error is not None) for r, origin, error in items]
    assert summary == [
        ("phq9", "a.json#entry[0]", False),
        (None, "a.json#entry[1]", True),
        ("p1", "a.json#entry[2]", False),
        ("q1", "b.ndjson:1", False),
        (None, "b.ndjson:3", True),
        (None, "b.ndjson:4", True),
        (None, "b.ndjson:5", True),
        ("q2", "b.ndjson:6", False),
        ("p2", "c.json:1", False),
        (None, "d.json:1", True),
        ("e1", "sub/e.ndjson:1", False),  # BOM and CRLF tolerated
    ]
    errors = {origin: error for _, origin, error in items if error}
    assert errors["b.ndjson:3"].startswith("invalid JSON")
    assert errors["b.ndjson:4"] == "not a JSON object (got list)"
    assert errors["b.ndjson:5"] == "JSON object without resourceType"
    assert errors["a.json#entry[1]"] == "Bundle entry without a resource"


def test_a_single_file_and_an_empty_folder(tmp_path: Path) -> None:
    write(tmp_path / "x.ndjson", json.dumps({"resourceType": "Patient", "id": "p"}) + "\n\n")
    assert [(o, e) for _, o, e in iter_folder(tmp_path / "x.ndjson")] == [("x.ndjson:1", None)]
    (tmp_path / "empty").mkdir()
    assert list(iter_folder(tmp_path / "empty")) == []


def test_order_is_stable_across_runs(tmp_path: Path) -> None:
    for name in ["z.ndjson", "m.ndjson", "a.ndjson"]:
        write(tmp_path / name, json.dumps({"resourceType": "Patient", "id": name}) + "\n")
    first = [o for _, o, _ in iter_folder(tmp_path)]
    assert first == ["a.ndjson:1", "m.ndjson:1", "z.ndjson:1"]
    assert [o for _, o, _ in iter_folder(tmp_path)] == first


def test_only_type_skips_bulk_files_of_other_types_but_reads_untyped_files(tmp_path):
    (tmp_path / "Patient.ndjson").write_text('{"resourceType": "Patient", "id": "p1"}\n')
    (tmp_path / "Encounter.001.ndjson").write_text('{"resourceType": "Encounter", "id": "e1"}\n')
    (tmp_path / "mixed.ndjson").write_text(
        '{"resourceType": "Patient", "id": "p2"}\n{"resourceType": "Encounter", "id": "e2"}\n'
    )
    known = ("Patient", "Encounter")
    seen = [origin for _, origin, _ in iter_folder(tmp_path, only_type="Patient", known_types=known)]
    assert seen == ["Patient.ndjson:1", "mixed.ndjson:1", "mixed.ndjson:2"]
    everything = [origin for _, origin, _ in iter_folder(tmp_path)]
    assert "Encounter.001.ndjson:1" in everything and len(everything) == 4
