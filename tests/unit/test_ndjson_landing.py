"""NDJSON files land block by block, in worker processes or not, exactly as resource by resource.

The reference is the per-resource path every other source still takes: `iter_folder` feeding
`RawLander.add`, which is how folder files landed before `pipelines.ndjson_landing`. The same awkward
file (byte-order mark, blank lines, CRLF endings, bytes that are not UTF-8, lines that are not JSON or
not resources, another type, whitespace inside a resource, duplicates, a resource nested too deep to
store, an invalid resource) is landed three ways; every row of the resource table, `raw.rejected`
and `raw.findings` and every count must agree.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import orjson
import pytest

from pipelines import ndjson_landing
from pipelines.ndjson_landing import land_ndjson, workers_for
from pipelines.raw_writer import LandingCounts, RawLander
from pipelines.resources.fhir.folder import iter_folder
from pipelines.warehouse import ensure_raw_schema
from quality_checks.structural import StructuralValidator

TYPE = "QuestionnaireResponse"


def _qr(i: int, version: str = "1", status: str = "completed") -> dict:
    return {
        "resourceType": TYPE,
        "id": f"qr-{i}",
        "meta": {"versionId": version, "lastUpdated": f"2026-03-0{1 + i % 9}T10:00:00Z"},
        "status": status,
        "questionnaire": "http://x/Questionnaire/phq-9|1.0",
        "subject": {"reference": f"Patient/p{i % 7}"},
        "authored": "2026-03-01T10:00:00+00:00",
        "item": [{"linkId": "1", "answer": [{"valueInteger": i % 4}]}],
    }


def _deep(levels: int) -> dict:
    item: dict = {"linkId": "leaf"}
    for n in range(levels):
        item = {"linkId": f"l{n}", "item": [item]}
    return {**_qr(9000), "id": "deep", "item": [item]}


def _awkward_file(path: Path) -> None:
    lines: list[bytes] = [b"\xef\xbb\xbf" + orjson.dumps(_qr(0))]  # a byte-order mark on line 1
    for i in range(1, 60):
        lines.append(orjson.dumps(_qr(i)))
    lines += [
        b"",  # blank
        b"   ",
        b'{"resourceType": "QuestionnaireResponse", "id": "trunc',  # not JSON
        b"[1, 2, 3]",  # not an object
        b'{"id": "no-type"}',  # no resourceType
        orjson.dumps({"resourceType": "Patient", "id": "p1"}),  # another type: not this pull's
        json.dumps(_qr(61), indent=None, separators=(", ", ": ")).encode(),  # not compact
        orjson.dumps(_qr(5)),  # a duplicate of line 6, many blocks later
        orjson.dumps(_qr(62, status="done")),  # invalid: status outside its binding
        orjson.dumps(_qr(63, version="2")),
        b'{"resourceType": "QuestionnaireResponse", "id": "bad-\xff-bytes"}',  # not UTF-8
        orjson.dumps({**_qr(64), "unknownElement": 1}),  # a finding that does not reject
    ]
    text = b"\n".join(lines)
    deep = json.dumps(_deep(300)).encode()  # orjson cannot store it: rejected with the reason
    path.write_bytes(text.replace(b"\n", b"\r\n", 3) + b"\n" + deep + b"\n" + orjson.dumps(_qr(65)))


def _rows(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    return {
        "resources": con.execute(
            "SELECT source, resource_type, id, version_id, version_from_server, last_updated, "
            "content_sha256, resource::VARCHAR, origin, deleted FROM raw.questionnaire_response ORDER BY ALL"
        ).fetchall(),
        "rejected": con.execute(
            "SELECT source, resource_type, id, version_id, reason, findings::VARCHAR, resource_text, origin "
            "FROM raw.rejected ORDER BY ALL"
        ).fetchall(),
        "findings": con.execute(
            "SELECT source, resource_type, id, version_id, path, message, error_type, blocking "
            "FROM raw.findings ORDER BY ALL"
        ).fetchall(),
    }


def _land_reference(con: duckdb.DuckDBPyConnection, folder: Path, batch: int) -> LandingCounts:
    """Resource by resource, as folder files landed before (pipelines.extract before blocks)."""
    lander = RawLander(con, "site", TYPE, "run", StructuralValidator(), batch_size=batch)
    for resource, origin, error in iter_folder(folder, only_type=TYPE, known_types=(TYPE, "Patient")):
        rel, _, number = origin.rpartition(":")
        text = (
            (folder / rel).read_bytes().split(b"\n")[int(number) - 1].decode(errors="replace").rstrip("\r\n")
        )
        if resource is None:
            lander.add(None, origin=origin, parse_error=error, text=text)
        elif resource.get("resourceType") == TYPE:
            lander.add(resource, origin=origin, text_as_received=lambda text=text: text)
    return lander.close()


def _land_blocks(con: duckdb.DuckDBPyConnection, folder: Path, batch: int) -> LandingCounts:
    lander = RawLander(con, "site", TYPE, "run", StructuralValidator(), batch_size=batch)
    land_ndjson(lander, folder / f"{TYPE}.ndjson", f"{TYPE}.ndjson", only_type=TYPE, keep_unparseable=True)
    return lander.close()


def _fresh(tmp_path: Path, name: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(tmp_path / f"{name}.duckdb"))
    ensure_raw_schema(con)
    return con


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "drop"
    d.mkdir()
    _awkward_file(d / f"{TYPE}.ndjson")
    return d


def test_blocks_in_workers_and_in_process_land_what_the_resource_path_lands(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(ndjson_landing, "BLOCK_BYTES", 700)  # many blocks, cut mid-file
    ref_con = _fresh(tmp_path, "ref")
    reference = _land_reference(ref_con, folder, batch=7)
    expected = _rows(ref_con)
    # The file exercises what it claims to.
    reasons = " | ".join(r[4] for r in expected["rejected"])
    assert "invalid JSON" in reasons and "not a JSON object" in reasons and "without resourceType" in reasons
    assert "levels deep" in reasons and "invalid status" in reasons
    assert reference.duplicates == 1 and reference.findings >= 2
    assert any(r[8] == f"{TYPE}.ndjson:1" for r in expected["resources"])  # the BOM line landed

    monkeypatch.setenv("ALLIANCE_QI_LANDING_WORKERS", "0")
    in_process_con = _fresh(tmp_path, "inproc")
    in_process = _land_blocks(in_process_con, folder, batch=7)
    assert _rows(in_process_con) == expected
    assert in_process.as_dict() == reference.as_dict()

    monkeypatch.setenv("ALLIANCE_QI_LANDING_WORKERS", "2")
    monkeypatch.setenv("ALLIANCE_QI_LANDING_PARALLEL_BYTES", "0")
    assert workers_for(folder / f"{TYPE}.ndjson") == 2
    workers_con = _fresh(tmp_path, "workers")
    in_workers = _land_blocks(workers_con, folder, batch=7)
    assert _rows(workers_con) == expected
    assert in_workers.as_dict() == reference.as_dict()
    assert in_workers.reconciles()


def test_a_rerun_over_a_grown_file_validates_only_the_new_versions(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("ALLIANCE_QI_LANDING_WORKERS", "0")
    con = _fresh(tmp_path, "w")
    first = _land_blocks(con, folder, batch=7)
    path = folder / f"{TYPE}.ndjson"
    path.write_bytes(path.read_bytes() + b"\n" + orjson.dumps(_qr(70)) + b"\n" + orjson.dumps(_qr(1, "2")))
    validator = StructuralValidator()
    lander = RawLander(con, "site", TYPE, "run-2", validator, batch_size=7)
    land_ndjson(lander, path, f"{TYPE}.ndjson", only_type=TYPE, keep_unparseable=True)
    second = lander.close()
    assert second.new_versions == 2
    assert second.unchanged == first.new_versions
    assert second.rejected == first.rejected
    stats = validator.stats
    assert stats.full_validations + stats.fast_path_hits == 2  # the two new versions, nothing else


def test_a_duplicate_after_its_batch_was_written_counts_once_and_lands_once(tmp_path):
    con = _fresh(tmp_path, "w")
    lander = RawLander(con, "site", TYPE, "run", StructuralValidator(), batch_size=2)
    for i in (1, 2, 3, 1, 4, 2):  # 1 and 2 come back after their batch was flushed
        lander.add(_qr(i), origin=f"f:{i}")
    counts = lander.close()
    assert counts.duplicates == 2 and counts.new_versions == 4 and counts.reconciles()
    assert con.execute("SELECT count(*) FROM raw.questionnaire_response").fetchone() == (4,)


def test_no_workers_for_small_files_or_when_turned_off(folder, monkeypatch):
    path = folder / f"{TYPE}.ndjson"
    monkeypatch.delenv("ALLIANCE_QI_LANDING_PARALLEL_BYTES", raising=False)
    monkeypatch.setenv("ALLIANCE_QI_LANDING_WORKERS", "2")
    assert workers_for(path) == 0  # below the 64 MiB default
    monkeypatch.setenv("ALLIANCE_QI_LANDING_PARALLEL_BYTES", "1")
    assert workers_for(path) == 2
    monkeypatch.setenv("ALLIANCE_QI_LANDING_WORKERS", "0")
    assert workers_for(path) == 0
