"""Tests of the synthetic clinic generator (demo/): determinism, referential integrity, planted mess,
structural validity, and that the built-in effects can be measured back from the generated answers.

Answers are scored here from the Questionnaires alone (answerOption extensions, contained ValueSets,
the LOINC answer list, the item rules in docs/domain.md), independently of the generator's own layouts, so
the forms are shown to be self-describing.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from demo import forms
from demo.generator import (
    MESS_KINDS,
    QR_STATUSES,
    GeneratedData,
    GeneratorConfig,
    generate,
    rupture_truth,
)
from demo.loader import write_ndjson

SCORE_URLS = (forms.ORDINAL_VALUE, forms.ORDINAL_VALUE_LEGACY, forms.ITEM_WEIGHT)
LOINC_ANSWER_SCORE = {"LA6568-5": 0, "LA6569-3": 1, "LA6570-1": 2, "LA6571-9": 3}
NOT_SCORED_CODES = {"69722-7", "44261-6", "70274-6"}  # difficulty item and embedded totals
TOTAL_CODES = {"44261-6", "70274-6"}
RANGES = {
    "phq-9": (0, 27),
    "gad-7": (0, 21),
    "srs": (0, 40),
    "ors": (0, 40),
    "wai-sr": (12, 60),
    "wai-sr-t": (12, 60),
    "mars": (0, 10),
    "dai-10": (-10, 10),
    "cbtsq": (16, 80),
}
MARS_YES_SCORES = {7, 8}  # docs/domain.md: "Yes" scores 1 on items 7, 8; "No" on the others
DAI_TRUE_POSITIVE = {1, 3, 4, 7, 9, 10}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def clinic() -> GeneratedData:
    """The default clinic: 300 patients, seed 42, mess 0.03."""
    return generate(GeneratorConfig())


@pytest.fixture(scope="module")
def small() -> GeneratedData:
    return generate(GeneratorConfig(patients=60, seed=7, mess_rate=0.05))


@pytest.fixture(scope="module")
def clean() -> GeneratedData:
    return generate(GeneratorConfig(patients=60, seed=7, mess_rate=0.0))


def _validate(resource: dict[str, Any]) -> str | None:
    """None when the R4B model accepts the resource, else the error text."""
    try:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    except Exception as exc:  # pydantic ValidationError and model-level errors alike
        return str(exc)
    return None


def _mess_ids(data: GeneratedData, *kinds: str) -> set[tuple[str, str]]:
    return {(m["resourceType"], m["id"]) for m in data.manifest["mess"] if not kinds or m["kind"] in kinds}


# ---------------------------------------------------------------- an independent scorer


def _walk(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for it in items:
        out.append(it)
        out.extend(_walk(it.get("item", [])))
        for ans in it.get("answer", []):
            out.extend(_walk(ans.get("item", [])))
    return out


def _questionnaire_index(data: GeneratedData) -> dict[str, dict[str, Any]]:
    """Questionnaires by every way a response may cite them: url|version, url, Questionnaire/id."""
    index: dict[str, dict[str, Any]] = {}
    for q in data.of_type("Questionnaire"):
        index[f"Questionnaire/{q['id']}"] = q
        if "url" in q:
            index[q["url"]] = q
            if "version" in q:
                index[f"{q['url']}|{q['version']}"] = q
    return index


def _codes(defn: dict[str, Any]) -> set[str]:
    return {c["code"] for c in defn.get("code", [])}


def _instrument(q: dict[str, Any]) -> str:
    codes = {c["code"] for c in q.get("code", [])} | {c for it in _walk(q["item"]) for c in _codes(it)}
    if codes & {"44249-1", "44261-6", "44250-9"}:
        return "phq-9"
    if codes & {"69737-5", "69725-0"}:
        return "gad-7"
    return str(q["id"])  # site forms: the id names the instrument


def _option_score(defn: dict[str, Any], q: dict[str, Any], code: str) -> float | None:
    for opt in defn.get("answerOption", []):
        if opt.get("valueCoding", {}).get("code") == code:
            for ext in opt.get("extension", []):
                if ext["url"] in SCORE_URLS:
                    return float(ext["valueDecimal"])
    vs_ref = defn.get("answerValueSet", "")
    if vs_ref.startswith("#"):
        vs = next(c for c in q.get("contained", []) if c["id"] == vs_ref[1:])
        for inc in vs.get("compose", {}).get("include", []):
            for concept in inc.get("concept", []):
                if concept["code"] == code:
                    return float(
                        next(e["valueDecimal"] for e in concept["extension"] if e["url"] in SCORE_URLS)
                    )
    if code in LOINC_ANSWER_SCORE:  # vendor forms carry no scores: fall back to the LOINC answer list
        return float(LOINC_ANSWER_SCORE[code])
    return None


def score(qr: dict[str, Any], qindex: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Instrument, item scores, total and embedded total of one response (None: unknown form)."""
    q = qindex.get(qr["questionnaire"])
    if q is None:
        return None
    defs = {d["linkId"]: d for d in _walk(q["item"])}
    instrument = _instrument(q)
    items: list[float] = []
    embedded = None
    for it in _walk(qr.get("item", [])):
        if "answer" not in it:
            continue
        defn = defs[it["linkId"]]
        ans = it["answer"][0]
        if _codes(defn) & TOTAL_CODES:
            embedded = next(v for k, v in ans.items() if k.startswith("value"))
            embedded = embedded["value"] if isinstance(embedded, dict) else embedded
            continue
        if _codes(defn) & NOT_SCORED_CODES:
            continue
        n = int(it["linkId"].rsplit("-", 1)[-1]) if instrument in ("mars", "dai-10") else 0
        if instrument == "mars":
            items.append(float((ans["valueCoding"]["code"] == "Y") == (n in MARS_YES_SCORES)))
        elif instrument == "dai-10":
            items.append(1.0 if ans["valueBoolean"] == (n in DAI_TRUE_POSITIVE) else -1.0)
        elif "valueInteger" in ans:
            items.append(float(ans["valueInteger"]))
        else:
            s = _option_score(defn, q, ans["valueCoding"]["code"])
            assert s is not None, f"{qr['id']}: no score for {ans}"
            items.append(s)
    return {"instrument": instrument, "items": items, "total": sum(items), "embedded": embedded}


def _pearson(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return sxy / math.sqrt(sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys))


@pytest.fixture(scope="module")
def scored(clinic: GeneratedData) -> dict[str, Any]:
    """Clean completed responses of the default clinic, scored and grouped by episode and session."""
    qindex = _questionnaire_index(clinic)
    messy = _mess_ids(clinic)
    enc = {e["id"]: e for e in clinic.of_type("Encounter")}
    by_episode: dict[str, list[tuple[str, str, dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    for qr in clinic.of_type("QuestionnaireResponse", phase=0):
        if ("QuestionnaireResponse", qr["id"]) in messy:
            continue
        s = score(qr, qindex)
        assert s is not None
        e = enc[qr["encounter"]["reference"].split("/")[1]]
        eoc = e["episodeOfCare"][0]["reference"].split("/")[1]
        by_episode[eoc].append((e["period"]["start"], qr["authored"], qr, s))
    for rows in by_episode.values():
        rows.sort(key=lambda r: (r[0], r[1]))
    return by_episode


# ---------------------------------------------------------------- determinism and size


def test_same_seed_gives_identical_output_and_other_seed_differs(tmp_path: Path) -> None:
    cfg = GeneratorConfig(patients=40, seed=3)
    a, b = generate(cfg), generate(GeneratorConfig(patients=40, seed=3))
    dump = lambda d: json.dumps([d.versions, d.manifest, d.last_updated], sort_keys=True)  # noqa: E731
    assert dump(a) == dump(b)
    assert dump(a) != dump(generate(GeneratorConfig(patients=40, seed=4)))
    write_ndjson(tmp_path / "a", a)
    write_ndjson(tmp_path / "b", b)
    for f in sorted((tmp_path / "a").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name


def test_mess_does_not_change_the_underlying_clinic(clean: GeneratedData, small: GeneratedData) -> None:
    # Mess has its own random stream: the clean clinic and the truth are the same with or without it.
    assert clean.manifest["truth"] == small.manifest["truth"]
    assert {r["id"] for r in clean.of_type("Encounter")} == {r["id"] for r in small.of_type("Encounter")}


@pytest.mark.parametrize("patients", [1, 25, 60])
def test_sizes_follow_patients(patients: int) -> None:
    data = generate(GeneratorConfig(patients=patients, seed=11))
    counts = data.manifest["counts"]
    assert counts["Patient"] == patients
    assert counts["Practitioner"] == 12 + 3  # therapists + one prescriber per clinic
    assert counts["Organization"] == 1 + 3
    assert counts["Questionnaire"] == len(forms.FORMS)
    assert patients <= counts["EpisodeOfCare"] <= 2 * patients
    ids = Counter((r["resourceType"], r["id"]) for r in data.versions[0])
    assert max(ids.values()) == 1  # phase 0 holds each resource once
    for rtype, n in counts.items():
        assert n == sum(1 for t, _ in ids if t == rtype)


def test_readable_ids(clinic: GeneratedData) -> None:
    assert clinic.of_type("Patient")[0]["id"] == "pat-00001"
    assert {r["id"] for r in clinic.of_type("Practitioner")} >= {"prac-001", "prac-012"}
    assert all(
        r["id"].startswith("enc-") and len(r["id"]) == len("enc-00001-03")
        for r in clinic.of_type("Encounter")
    )


# ---------------------------------------------------------------- references and raters


def test_every_response_references_existing_patient_encounter_and_form(clinic: GeneratedData) -> None:
    latest = clinic.latest()
    qindex = _questionnaire_index(clinic)
    unknown = _mess_ids(clinic, "unknown_questionnaire")
    for qr in clinic.of_type("QuestionnaireResponse"):
        assert ("Patient", qr["subject"]["reference"].split("/")[1]) in latest
        assert ("Encounter", qr["encounter"]["reference"].split("/")[1]) in latest
        if ("QuestionnaireResponse", qr["id"]) in unknown:
            assert qr["questionnaire"] == forms.UNKNOWN_QUESTIONNAIRE
        else:
            assert qr["questionnaire"] in qindex, qr["id"]
    for e in clinic.of_type("Encounter"):
        assert ("EpisodeOfCare", e["episodeOfCare"][0]["reference"].split("/")[1]) in latest
        assert ("Appointment", e["appointment"][0]["reference"].split("/")[1]) in latest
    for md in clinic.of_type("MedicationDispense"):
        assert ("MedicationRequest", md["authorizingPrescription"][0]["reference"].split("/")[1]) in latest


def test_canonicals_by_form_shape() -> None:
    assert forms.canonical_for("wai-sr") == "http://alliance-qi.example.org/fhir/Questionnaire/wai-sr|1.0"
    assert forms.canonical_for("phq-9-lhc") == "Questionnaire/phq-9-lhc"
    assert "url" not in forms.FORMS["phq-9-lhc"]
    assert forms.canonical_for("phq-9-sdc") == forms.SDC_PHQ9_URL
    assert forms.canonical_for("phq-9-vendor") == "http://vendor-ehr.example.com/forms/8f3a2c"
    phq = forms.FORMS["phq-9"]
    assert [c["code"] for it in phq["item"][:9] for c in it["code"]] == [c for c, _ in forms.PHQ9_ITEMS]
    vendor = json.dumps(forms.FORMS["phq-9-vendor"])
    assert "ordinalValue" not in vendor and "itemWeight" not in vendor
    assert forms.ITEM_WEIGHT in json.dumps(forms.FORMS["gad-7-vendor"])
    assert forms.ORDINAL_VALUE_LEGACY in json.dumps(forms.FORMS["gad-7-legacy"])


def test_rater_source_and_author(clinic: GeneratedData) -> None:
    qindex = _questionnaire_index(clinic)
    planted = _mess_ids(clinic, "invalid_structure")
    seen: Counter[tuple[str, str, str]] = Counter()
    for qr in clinic.of_type("QuestionnaireResponse", phase=0):
        q = qindex.get(qr["questionnaire"])
        if q is None:
            continue
        source = qr["source"]["reference"].split("/")[0]
        author = qr["author"]["reference"].split("/")[0]
        seen[(q["id"], source, author)] += 1
        if ("QuestionnaireResponse", qr["id"]) not in planted:
            assert qr["authored"][-6] in "+-", "authored carries a UTC offset"
        if q["id"] == "wai-sr-t":
            assert (source, author) == ("Practitioner", "Practitioner")
        else:
            assert source == "Patient"
    # Some patient-rated forms were keyed in by the practitioner: author differs from source.
    assert seen[("wai-sr", "Patient", "Practitioner")] > 0
    assert seen[("wai-sr", "Patient", "Patient")] > seen[("wai-sr", "Patient", "Practitioner")]


def test_form_shape_mix(clinic: GeneratedData) -> None:
    used = Counter(qr["questionnaire"] for qr in clinic.of_type("QuestionnaireResponse", phase=0))
    for form_id in forms.FORMS:
        assert used[forms.canonical_for(form_id)] > 0, form_id
    phq_total = sum(used[forms.canonical_for(f)] for f in ("phq-9", "phq-9-lhc", "phq-9-sdc", "phq-9-vendor"))
    assert 0.6 < used[forms.canonical_for("phq-9")] / phq_total < 0.8


# ---------------------------------------------------------------- mess


def test_every_mess_kind_present_and_none_without_mess(clinic: GeneratedData, clean: GeneratedData) -> None:
    counts = clinic.manifest["mess_counts"]
    n_qr = clinic.manifest["counts"]["QuestionnaireResponse"]
    for kind in MESS_KINDS:
        assert counts[kind] > 0, kind
    for kind in ("entered_in_error", "amended", "in_progress", "stopped"):
        assert 0.01 < counts[kind] / n_qr < 0.06, kind  # at mess_rate 0.03 of all responses
    assert clean.manifest["mess"] == []
    assert all(v == 0 for v in clean.manifest["mess_counts"].values())
    assert clean.versions[1] == []
    statuses = {qr["status"] for qr in clean.of_type("QuestionnaireResponse")}
    assert statuses == {"completed"}


def test_mess_entries_describe_what_is_in_the_data(clinic: GeneratedData) -> None:
    latest = clinic.latest()
    first = {(r["resourceType"], r["id"]): r for r in clinic.versions[0]}
    qindex = _questionnaire_index(clinic)
    for m in clinic.manifest["mess"]:
        key = (m["resourceType"], m["id"])
        res = latest[key]
        kind = m["kind"]
        if kind == "entered_in_error":
            assert res["status"] == "entered-in-error" and first[key]["status"] == "completed"
        elif kind == "amended":
            assert res["status"] == "amended" and res["authored"] > first[key]["authored"]
            a, b = score(first[key], qindex), score(res, qindex)
            assert a and b
            assert sum(x != y for x, y in zip(a["items"], b["items"], strict=True)) == 1
            if b["embedded"] is not None:
                assert b["embedded"] == b["total"]
        elif kind == "duplicate_submission":
            orig = latest[("QuestionnaireResponse", m["id"].removesuffix("-dup"))]
            assert res["item"] == orig["item"] and res["encounter"] == orig["encounter"]
            delta = datetime.fromisoformat(res["authored"]) - datetime.fromisoformat(orig["authored"])
            assert delta == timedelta(minutes=1)
        elif kind == "total_mismatch":
            s = score(res, qindex)
            assert s and s["embedded"] is not None and s["embedded"] != s["total"]
        elif kind == "missing_items":
            s = score(res, qindex)
            assert s and len(s["items"]) < {"phq-9": 9, "gad-7": 7, "wai-sr": 12}[s["instrument"]]
        elif kind in ("in_progress", "stopped"):
            assert res["status"] == kind.replace("_", "-")
        elif kind == "unknown_questionnaire":
            assert res["questionnaire"] == forms.UNKNOWN_QUESTIONNAIRE
    # Phase 1 is exactly the amended and entered-in-error versions, same ids as phase 0.
    later = {(r["resourceType"], r["id"]) for r in clinic.versions[1]}
    assert later == _mess_ids(clinic, "amended", "entered_in_error")
    assert later <= set(first)
    assert clinic.manifest["version_count"]["QuestionnaireResponse"] == (
        clinic.manifest["counts"]["QuestionnaireResponse"] + len(later)
    )


def test_structural_validity_matches_the_manifest(small: GeneratedData, clean: GeneratedData) -> None:
    planted = {
        (m["resourceType"], m["id"]): m
        for m in small.manifest["mess"]
        if m["kind"] in ("invalid_structure", "invalid_unused_element")
    }
    assert {m["kind"] for m in planted.values()} == {"invalid_structure", "invalid_unused_element"}
    for _, res in small.iter_versions():
        key = (res["resourceType"], res["id"])
        error = _validate(res)
        if key not in planted:
            assert error is None, f"{key}: {error}"
            if res["resourceType"] == "QuestionnaireResponse":
                assert res["status"] in QR_STATUSES
        elif planted[key]["check"] == "model":
            assert error is not None, f"{key} was planted invalid but validates"
            assert planted[key]["element"].split(".")[-1] in error
        else:  # status "done": the pydantic model does not check required bindings
            assert res["status"] not in QR_STATUSES
    for _, res in clean.iter_versions():
        assert _validate(res) is None, res["id"]


def test_invalid_structure_covers_each_variant(small: GeneratedData) -> None:
    elements = Counter(m["element"] for m in small.manifest["mess"] if m["kind"] == "invalid_structure")
    assert set(elements) == {
        "Patient.birthDate",
        "Encounter.status",
        "QuestionnaireResponse.status",
        "QuestionnaireResponse.authored",
        "QuestionnaireResponse.item.linkId",
    }
    unused = {m["element"] for m in small.manifest["mess"] if m["kind"] == "invalid_unused_element"}
    assert "Questionnaire.item.answerOption.extension.valueString" in unused


# ---------------------------------------------------------------- scores and effects


def test_scores_from_answers_match_truth(clinic: GeneratedData, scored: dict[str, Any]) -> None:
    truth = clinic.manifest["truth"]["episodes"]
    checked = 0
    for eoc, rows in scored.items():
        phq = [s["total"] for _, _, _, s in rows if s["instrument"] == "phq-9"]
        wai = [s["total"] for _, _, qr, s in rows if s["instrument"] == "wai-sr"]
        t = truth[eoc]
        # Responses dropped as mess leave gaps, so compare where nothing was planted.
        if len(phq) == len(t["phq9"]):
            assert phq == [float(v) for _, v in t["phq9"]]
            checked += 1
        if len(wai) == len(t["wai_sr_sums"]):
            assert wai == [float(v) for v in t["wai_sr_sums"]]
        for _, _, _, s in rows:
            if s["embedded"] is not None:
                assert s["embedded"] == s["total"]  # clean responses embed the right total
            lo, hi = RANGES[s["instrument"]]
            assert lo <= s["total"] <= hi
    assert checked > 0.3 * len(scored)  # about 40% of episodes have no PHQ-9 response touched by mess


def test_early_alliance_predicts_phq9_improvement(scored: dict[str, Any]) -> None:
    xs, ys = [], []
    for rows in scored.values():
        wai = [s["total"] / 12 for _, _, _, s in rows if s["instrument"] == "wai-sr"]
        phq = [s["total"] for _, _, _, s in rows if s["instrument"] == "phq-9"]
        if len(wai) >= 3 and len(phq) >= 2:
            xs.append(sum(wai[:3]) / 3)
            ys.append(phq[0] - phq[-1])
    assert len(xs) > 150
    baseline_mean = sum(
        s["total"] for rows in scored.values() for _, _, _, s in rows[:8] if s["instrument"] == "phq-9"
    )
    assert baseline_mean > 0
    assert _pearson(xs, ys) > 0.2


def test_patient_rated_alliance_predicts_adherence_attitudes_more_than_clinician(
    scored: dict[str, Any],
) -> None:
    p, c, mars, dai = [], [], [], []
    for rows in scored.values():
        wai = [s["total"] / 12 for _, _, _, s in rows if s["instrument"] == "wai-sr"]
        wait = [s["total"] / 12 for _, _, _, s in rows if s["instrument"] == "wai-sr-t"]
        m = [s["total"] for _, _, _, s in rows if s["instrument"] == "mars"]
        d = [s["total"] for _, _, _, s in rows if s["instrument"] == "dai-10"]
        if wai and wait and m and d:
            p.append(sum(wai) / len(wai))
            c.append(sum(wait) / len(wait))
            mars.append(sum(m) / len(m))
            dai.append(sum(d) / len(d))
    assert len(p) > 100
    r_p, r_c = _pearson(p, mars), _pearson(c, mars)
    assert r_p > 0.4
    assert r_p > r_c + 0.15
    assert _pearson(p, dai) > _pearson(c, dai)
    assert 0.1 < _pearson(p, c) < 0.55  # raters agree only modestly


def test_patient_alliance_predicts_refills(clinic: GeneratedData) -> None:
    truth = clinic.manifest["truth"]
    pairs = [
        (truth["episodes"][v["episodes"][0]]["patient_alliance_level"], v["pdc"])
        for v in truth["patients"].values()
        if v["pdc"] is not None
    ]
    assert len(pairs) > 100
    assert _pearson([a for a, _ in pairs], [b for _, b in pairs]) > 0.2
    # Fills behave like real ones: 30-day supplies, some early (overlapping), some late, some switches.
    fills: dict[str, list[date]] = defaultdict(list)
    for md in clinic.of_type("MedicationDispense"):
        assert md["daysSupply"] == {
            "value": 30,
            "unit": "d",
            "system": "http://unitsofmeasure.org",
            "code": "d",
        }
        fills[md["subject"]["reference"]].append(date.fromisoformat(md["whenHandedOver"][:10]))
    gaps = [
        (b - a).days for days in fills.values() for a, b in zip(sorted(days), sorted(days)[1:], strict=False)
    ]
    assert any(g < 30 for g in gaps) and any(g > 35 for g in gaps)
    drugs: dict[str, set[str]] = defaultdict(set)
    for mr in clinic.of_type("MedicationRequest"):
        drugs[mr["subject"]["reference"]].add(mr["medicationCodeableConcept"]["coding"][0]["code"])
    assert any(len(codes) > 1 for codes in drugs.values())


def test_therapist_effects_ruptures_and_dropout(clinic: GeneratedData, scored: dict[str, Any]) -> None:
    truth = clinic.manifest["truth"]
    by_therapist: dict[str, list[float]] = defaultdict(list)
    drops = sessions = 0
    for eoc, rows in scored.items():
        wai = [s["total"] for _, _, _, s in rows if s["instrument"] == "wai-sr"]
        by_therapist[truth["episodes"][eoc]["therapist"]].extend(x / 12 for x in wai)
        sessions += max(0, len(wai) - 1)
        drops += sum(1 for a, b in itertools.pairwise(wai) if a - b >= 12)
    effects = [truth["therapists"][t]["alliance_effect"] for t in sorted(by_therapist)]
    means = [sum(v) / len(v) for _, v in sorted(by_therapist.items())]
    assert _pearson(effects, means) > 0.7
    assert max(means) - min(means) > 0.6  # clearly strong and weak therapists
    assert 0.03 < drops / sessions < 0.15  # ruptures: a >= 1 point drop in roughly 8% of sessions
    episodes = truth["episodes"].values()
    outcomes = Counter(r["outcome"] for e in episodes for r in e["ruptures"])
    assert outcomes["repair"] > 0 and outcomes["dropout"] > 0
    # Dropout after a rupture is commoner among low-alliance patients.
    lows = [e for e in episodes if e["patient_alliance_level"] < 3.5 and e["ruptures"]]
    highs = [e for e in episodes if e["patient_alliance_level"] >= 3.9 and e["ruptures"]]
    rate = lambda es: sum(e["dropout"] for e in es) / len(es)  # noqa: E731
    assert rate(lows) > rate(highs)
    statuses = Counter(a["status"] for a in clinic.of_type("Appointment"))
    assert statuses["fulfilled"] > statuses["noshow"] > 0 and statuses["cancelled"] > 0
    assert {e["status"] for e in clinic.of_type("EpisodeOfCare")} == {"finished", "active"}


def test_rupture_truth_counts_planted_intent_and_what_the_scores_show() -> None:
    def episode(
        sums: list[int], ruptures: list[tuple[int, str]], status: str = "finished", dropout: bool = False
    ):
        return {
            "wai_sr_sums": sums,
            "sessions_attended": len(sums),
            "status": status,
            "dropout": dropout,
            "ruptures": [{"session": s, "outcome": o} for s, o in ruptures],
        }

    episodes = {
        # 48 -> 33 at session 2; back to 48 two sessions later (half-step repair first)
        "a": episode([48, 33, 40, 48, 47], [(2, "repair")]),
        # the patient left after the half step: planned repair, never back at 48
        "b": episode([48, 33, 40], [(2, "repair")], dropout=True),
        "c": episode([50, 35], [(2, "dropout")], dropout=True),  # left right after the rupture
        "d": episode([50, 35], [(2, "open")]),  # rupture in the last planned session
        "e": episode([50, 35, 40], [(2, "repair")], status="active"),  # one session so far
    }
    data = GeneratedData(versions=[], manifest={"truth": {"episodes": episodes}}, last_updated={})
    truth = rupture_truth(data)
    assert truth["sessions"] == 15 and truth["ruptures"] == 5
    assert truth["rupture_rate"] == pytest.approx(5 / 15)
    assert truth["planted"] == {"repair": 3, "dropout": 1, "open": 1}
    assert truth["realised"] == {"repaired": 1, "not_repaired": 1, "dropout": 1, "ended": 1, "pending": 1}


def test_cbtsq_scores_match_the_skill_truth_and_skill_use_lowers_endpoint_phq9(
    clinic: GeneratedData, scored: dict[str, Any]
) -> None:
    from demo.generator import SKILL_EFFECTS

    truth = clinic.manifest["truth"]["episodes"]
    checked = 0
    for eoc, rows in scored.items():
        cbtsq = [s["total"] for _, _, _, s in rows if s["instrument"] == "cbtsq"]
        if len(cbtsq) == len(truth[eoc]["cbtsq"]) and cbtsq:
            assert cbtsq == [float(v) for _, v in truth[eoc]["cbtsq"]]
            checked += 1
    assert checked > 100
    # never at intake (no skills taught yet), always with a PHQ-9 review
    for t in truth.values():
        phq_sessions = {s for s, _ in t["phq9"]}
        assert {s for s, _ in t["cbtsq"]} == phq_sessions - {1}
    # episodes that complete their plan: more skill use, lower endpoint at a given baseline
    done = [t for t in truth.values() if t["status"] == "finished" and not t["dropout"] and t["cbtsq"]]
    hi = [t["phq9_end"] - 0.7 * t["phq9_baseline"] for t in done if t["skill_level"] > 52]
    lo = [t["phq9_end"] - 0.7 * t["phq9_baseline"] for t in done if t["skill_level"] < 44]
    assert len(hi) > 20 and len(lo) > 20
    assert sum(hi) / len(hi) < sum(lo) / len(lo)
    assert SKILL_EFFECTS["skill_use"] < 0 and SKILL_EFFECTS["skill_use_x_alliance"] < 0
