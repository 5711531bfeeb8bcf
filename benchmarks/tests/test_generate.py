"""The scale generator: exact counts, determinism, caching, every form shape, planted records."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from benchmarks.common import read_json
from benchmarks.generate import TYPES, ScaleConfig, ensure_dataset, generate
from demo.forms import FORMS
from quality_checks.structural import StructuralValidator


def _lines(folder: Path, rtype: str) -> list[bytes]:
    return [ln for ln in (folder / f"{rtype}.ndjson").read_bytes().splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("gen") / "1500"
    # Higher defect rates than the default so a small set holds every kind of planted record.
    cfg = ScaleConfig(
        responses=1500, seed=3, bad_rate=0.03, unused_rate=0.03, version2_rate=0.03, unknown_rate=0.02
    )
    return folder, generate(cfg, folder)


def test_exactly_n_distinct_responses_and_one_file_per_type(dataset):
    folder, manifest = dataset
    assert sorted(p.name for p in folder.glob("*.ndjson")) == sorted(f"{t}.ndjson" for t in TYPES)
    ids = set()
    versions = Counter()
    for line in _lines(folder, "QuestionnaireResponse"):
        try:
            res = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        ids.add(res["id"])
        versions[res["meta"]["versionId"]] += 1
    assert len(ids) == manifest["responses"] == 1500
    assert versions["2"] == manifest["response_versions_2"] > 0
    for rtype in TYPES:
        assert len(_lines(folder, rtype)) == manifest["lines"][rtype]


def test_every_questionnaire_shape_occurs(dataset):
    _, manifest = dataset
    assert set(FORMS) <= set(manifest["forms"])
    assert manifest["forms"].get("unknown", 0) > 0


def test_planted_records_are_what_the_validator_says(dataset):
    """Every planted invalid record is rejected by the pipeline's validator; the unused-element ones
    land with findings; and nothing else in the files has any finding."""
    folder, manifest = dataset
    expect = {(p["resourceType"], p["id"], p["version"]): p["expect"] for p in manifest["planted"] if p["id"]}
    kinds = Counter(p["expect"] for p in manifest["planted"])
    assert kinds["rejected"] >= 5 and kinds["landed_with_findings"] >= 3 and kinds["unparseable"] == 2
    validator = StructuralValidator()
    unparseable = 0
    for rtype in TYPES:
        for line in _lines(folder, rtype):
            try:
                res = orjson.loads(line)
            except orjson.JSONDecodeError:
                unparseable += 1
                continue
            outcome = validator.validate(res, expected_type=rtype)
            want = expect.get((rtype, res["id"], res["meta"]["versionId"]), "clean")
            if want == "rejected":
                assert outcome.rejected, (rtype, res["id"])
            elif want == "landed_with_findings":
                assert not outcome.rejected and outcome.findings, (rtype, res["id"])
            else:
                assert not outcome.rejected and not outcome.findings, (rtype, res["id"], outcome.reason)
    assert unparseable == 2


def test_same_key_gives_identical_bytes(tmp_path):
    cfg = ScaleConfig(responses=300, seed=11)
    generate(cfg, tmp_path / "a")
    generate(cfg, tmp_path / "b")
    for rtype in TYPES:
        assert (tmp_path / "a" / f"{rtype}.ndjson").read_bytes() == (
            tmp_path / "b" / f"{rtype}.ndjson"
        ).read_bytes()
    other = ScaleConfig(responses=300, seed=12)
    generate(other, tmp_path / "c")
    qr = "QuestionnaireResponse.ndjson"
    assert (tmp_path / "a" / qr).read_bytes() != (tmp_path / "c" / qr).read_bytes()


def test_cached_folder_is_reused_until_the_key_changes(tmp_path):
    folder = tmp_path / "300"
    cfg = ScaleConfig(responses=300, seed=5)
    _, first, reused = ensure_dataset(cfg, folder)
    assert not reused
    stamp = (folder / "QuestionnaireResponse.ndjson").stat().st_mtime_ns
    _, again, reused = ensure_dataset(cfg, folder)
    assert reused and again == first
    assert (folder / "QuestionnaireResponse.ndjson").stat().st_mtime_ns == stamp
    _, changed, reused = ensure_dataset(ScaleConfig(responses=300, seed=6), folder)
    assert not reused and changed["key"]["seed"] == 6 == read_json(folder / "manifest.json")["key"]["seed"]
    assert not list(tmp_path.glob("*.tmp*"))  # generated beside, renamed into place


@pytest.mark.parametrize(
    "kwargs", [{"responses": 0}, {"bad_rate": 1.5}, {"therapists": 2, "clinics": 3}, {"clinics": 0}]
)
def test_invalid_configs_are_refused(kwargs):
    with pytest.raises(ValueError):
        ScaleConfig(**kwargs)
