"""The instrument registry files: complete, consistent, and extendable by a site file."""

from __future__ import annotations

import pytest

from fhir_mappings.registry import RegistryError, load_registry

EXPECTED = {  # id: (items, total range, rater)
    "wai_sr": (12, (12, 60), "patient"),
    "wai_therapist": (12, (12, 60), "clinician"),
    "srs": (4, (0, 40), "patient"),
    "ors": (4, (0, 40), "patient"),
    "phq9": (9, (0, 27), "patient"),
    "gad7": (7, (0, 21), "patient"),
    "mars": (10, (0, 10), "patient"),
    "dai10": (10, (-10, 10), "patient"),
    "cbtsq": (16, (16, 80), "patient"),
}


@pytest.fixture
def empty_site(tmp_path):
    return tmp_path


def test_all_nine_instruments_ship_with_items_ranges_and_citations(empty_site):
    reg = load_registry(empty_site)
    assert set(reg) == set(EXPECTED)
    for key, (n_items, total_range, rater) in EXPECTED.items():
        inst = reg[key]
        assert len(inst.items) == n_items, key
        assert inst.scales["total"].range == total_range, key
        assert inst.default_rater == rater
        assert inst.citation and inst.source_file == f"{key}.yaml"
        # the total's range follows from the item range and the rule
        lo, hi = inst.item_range
        total = inst.scales["total"]
        assert total.rule == "sum" and (lo * n_items, hi * n_items) == total_range, key


def test_wai_subscales_partition_the_items(empty_site):
    for key in ("wai_sr", "wai_therapist"):
        s = load_registry(empty_site)[key].scales
        assert sorted(s["task"].items + s["goal"].items + s["bond"].items) == list(range(1, 13))
        assert s["task"].items == [1, 2, 10, 12] and s["bond"].items == [3, 5, 7, 9]


def test_phq9_facts(empty_site):
    phq = load_registry(empty_site)["phq9"]
    assert [i.codes[0] for i in phq.items][:2] == ["44250-9", "44255-8"]
    assert phq.missing.rule == "prorate" and phq.missing.max_missing == 2
    assert phq.thresholds["caseness"] == 10 and phq.thresholds["reliable_change"] == 6
    assert {a.code: a.score for a in phq.answer_scores}["LA6571-9"] == 3
    assert phq.reported_total is not None and "44261-6" in phq.reported_total.codes


def test_mars_and_dai_keying(empty_site):
    reg = load_registry(empty_site)
    mars = {i.number: i.scores for i in reg["mars"].items}
    assert mars[1] == {"Y": 0, "N": 1} and mars[7] == {"Y": 1, "N": 0}
    dai = {i.number: i.scores for i in reg["dai10"].items}
    assert dai[1] == {"true": 1, "false": -1} and dai[2] == {"true": -1, "false": 1}


def test_site_file_maps_its_own_form_onto_a_shipped_instrument(tmp_path):
    (tmp_path / "our_phq9.yaml").write_text(
        "extends: phq9\nrecognise:\n  canonical_urls: [https://our-ehr.example/forms/phq]\n"
        "items:\n  - {number: 1, link_ids: [ourq1]}\nthresholds: {caseness: 11}\n"
    )
    phq = load_registry(tmp_path)["phq9"]
    assert "https://our-ehr.example/forms/phq" in phq.recognise.canonical_urls
    assert "ourq1" in phq.items[0].link_ids and "phq9-1" in phq.items[0].link_ids
    assert phq.thresholds["caseness"] == 11 and phq.thresholds["reliable_change"] == 6


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("extends: nope\n", "unknown instrument"),
        ("id: x\nname: x\n", "x.yaml"),
        ("[1, 2]\n", "expected a mapping"),
    ],
)
def test_bad_site_files_fail_with_the_file_named(tmp_path, text, message):
    (tmp_path / "x.yaml").write_text(text)
    with pytest.raises(RegistryError, match=message):
        load_registry(tmp_path)


def test_alliance_rupture_thresholds_ship_with_their_source(empty_site):
    reg = load_registry(empty_site)
    assert reg["wai_sr"].thresholds["reliable_drop"] == 0.75
    assert reg["srs"].thresholds["reliable_drop"] == 5
    for key, basis in (("wai_sr", "Jacobson & Truax"), ("srs", "ORS")):
        source = reg[key].threshold_sources["reliable_drop"]
        assert "verify" in source and basis in source


def test_a_site_override_is_credited_to_the_site_unless_it_names_a_source(tmp_path):
    (tmp_path / "ours.yaml").write_text("extends: wai_sr\nthresholds: {reliable_drop: 1.0}\n")
    wai = load_registry(tmp_path)["wai_sr"]
    assert wai.thresholds["reliable_drop"] == 1.0
    assert wai.threshold_sources["reliable_drop"] == "site file ours.yaml"
    (tmp_path / "ours.yaml").write_text(
        "extends: wai_sr\nthresholds: {reliable_drop: 0.9}\n"
        "threshold_sources: {reliable_drop: 'RCI from our 2025 test-retest study'}\n"
    )
    wai = load_registry(tmp_path)["wai_sr"]
    assert wai.threshold_sources["reliable_drop"] == "RCI from our 2025 test-retest study"


def test_a_source_for_an_undeclared_threshold_is_an_error(tmp_path):
    (tmp_path / "ours.yaml").write_text("extends: srs\nthreshold_sources: {nonsense: 'a paper'}\n")
    with pytest.raises(RegistryError, match="threshold_sources names unknown thresholds"):
        load_registry(tmp_path)


def test_cbtsq_subscales_partition_the_items_and_it_has_no_loinc_code(empty_site):
    cbtsq = load_registry(empty_site)["cbtsq"]
    s = cbtsq.scales
    assert s["behavioral_activation"].items == list(range(1, 8))
    assert s["cognitive_restructuring"].items == list(range(8, 17))
    assert (s["behavioral_activation"].range, s["cognitive_restructuring"].range) == ((7, 35), (9, 45))
    assert cbtsq.domain == "skill" and cbtsq.item_range == (1, 5) and cbtsq.missing.rule == "invalid"
    assert cbtsq.recognise.questionnaire_codes == [] and cbtsq.recognise.canonical_urls
