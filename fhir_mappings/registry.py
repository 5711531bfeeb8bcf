"""The declarative instrument registry: one YAML file per instrument in `fhir_mappings/instruments/`.

A site adds an instrument, or maps its own form onto a shipped one, by dropping a file in
`fhir_mappings/instruments/site/` (or the folder named by `ALLIANCE_QI_INSTRUMENTS_DIR`); no code
changes. A site file with `extends: <id>` adds canonical URLs, questionnaire codes and item
linkIds/codes to the shipped instrument and may override its thresholds.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

SHIPPED_DIR = Path(__file__).resolve().parent / "instruments"
SITE_DIR = SHIPPED_DIR / "site"


class RegistryError(ValueError):
    """An instrument file is invalid; the message names the file."""


class Coding(BaseModel):
    system: str | None = None
    code: str


class Recognise(BaseModel):
    canonical_urls: list[str] = Field(default_factory=list)
    questionnaire_codes: list[Coding] = Field(default_factory=list)


class Item(BaseModel):
    number: int = Field(ge=1)
    codes: list[str] = Field(default_factory=list)
    link_ids: list[str] = Field(default_factory=list)
    scores: dict[str, float] | None = None  # per-item answer scores (yes/no, true/false items)


class AnswerScore(BaseModel):
    code: str
    score: float


class Scale(BaseModel):
    items: list[int]
    rule: Literal["sum", "mean"]
    range: tuple[float, float]


class Missing(BaseModel):
    rule: Literal["invalid", "prorate"]
    max_missing: int = 0
    # A prorated sum (sum x items / answered) is fractional; 'nearest' rounds it to the nearest whole
    # number, halves up, so it stays on the instrument's integer scale and its cut-offs read as on a
    # complete form (9.75 is 10, a case, not a non-case); 'none' keeps the fraction.
    round: Literal["none", "nearest"] = "none"


class ItemRef(BaseModel):
    codes: list[str] = Field(default_factory=list)
    link_ids: list[str] = Field(default_factory=list)


class Instrument(BaseModel):
    """One instrument's definition (see docs/instruments.md for every key)."""

    id: str
    name: str
    registry_version: str
    domain: Literal["alliance", "outcome", "adherence", "skill"]
    default_rater: Literal["patient", "clinician", "other"]
    citation: str
    recognise: Recognise
    items: list[Item]
    item_range: tuple[float, float]
    answer_scores: list[AnswerScore] = Field(default_factory=list)
    reverse_keyed: list[int] = Field(default_factory=list)
    reported_total: ItemRef | None = None
    ignored_items: ItemRef | None = None
    scales: dict[str, Scale]
    missing: Missing
    thresholds: dict[str, Any] = Field(default_factory=dict)
    # Where a threshold's value comes from (a citation, or "project default ... verify"), by threshold
    # name: a value that decides what the marts call a rupture must say whose rule it is.
    threshold_sources: dict[str, str] = Field(default_factory=dict)
    source_file: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Instrument:
        numbers = [i.number for i in self.items]
        if sorted(numbers) != list(range(1, len(numbers) + 1)):
            raise ValueError(f"items must be numbered 1..{len(numbers)} once each")
        if "total" not in self.scales:
            raise ValueError("a 'total' scale is required")
        for name, scale in self.scales.items():
            unknown = set(scale.items) - set(numbers)
            if unknown:
                raise ValueError(f"scale {name} names unknown items {sorted(unknown)}")
            if scale.range[0] > scale.range[1]:
                raise ValueError(f"scale {name} has an empty range")
        if set(self.reverse_keyed) - set(numbers):
            raise ValueError("reverse_keyed names unknown items")
        lo, hi = self.item_range
        for s in self.answer_scores:
            if not lo <= s.score <= hi:
                raise ValueError(f"answer score {s.code}={s.score} outside item_range {self.item_range}")
        if self.missing.rule == "prorate" and self.missing.max_missing < 1:
            raise ValueError("prorate needs max_missing >= 1")
        if self.missing.round != "none" and self.missing.rule != "prorate":
            raise ValueError("missing.round applies to prorated scores only (rule: prorate)")
        unsourced = set(self.threshold_sources) - set(self.thresholds)
        if unsourced:
            raise ValueError(f"threshold_sources names unknown thresholds {sorted(unsourced)}")
        return self


# Parsed files by (path, mtime, size): every asset step loads the registry for its fingerprint, and
# parsing the YAML again each time cost about a second per pipeline run. A changed file is re-read.
_PARSED: dict[tuple[str, int, int], dict[str, Any]] = {}


def _read(path: Path) -> dict[str, Any]:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _PARSED:
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise RegistryError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise RegistryError(f"{path}: expected a mapping")
        _PARSED[key] = data
    return copy.deepcopy(_PARSED[key])  # callers get their own copy to merge site files into


def _merge_site(base: dict[str, Any], site: dict[str, Any], site_name: str) -> dict[str, Any]:
    """Apply a site `extends` file: append recognition and item mappings, override thresholds.

    A threshold the site overrides takes the site's `threshold_sources` entry, else "site file
    <name>": the shipped source would otherwise be credited with the site's value."""
    merged = {**base}
    rec = {**base.get("recognise", {})}
    for key in ("canonical_urls", "questionnaire_codes"):
        rec[key] = [*rec.get(key, []), *site.get("recognise", {}).get(key, [])]
    merged["recognise"] = rec
    extra = {i["number"]: i for i in site.get("items", [])}
    merged["items"] = [
        {
            **item,
            "codes": [*item.get("codes", []), *extra.get(item["number"], {}).get("codes", [])],
            "link_ids": [*item.get("link_ids", []), *extra.get(item["number"], {}).get("link_ids", [])],
        }
        for item in base["items"]
    ]
    site_thresholds = site.get("thresholds", {})
    merged["thresholds"] = {**base.get("thresholds", {}), **site_thresholds}
    merged["threshold_sources"] = {
        **base.get("threshold_sources", {}),
        **{key: f"site file {site_name}" for key in site_thresholds},
        **site.get("threshold_sources", {}),
    }
    return merged


def load_registry(site_dir: str | Path | None = None) -> dict[str, Instrument]:
    """All instruments by id: the shipped files, then site files (new instruments or `extends`)."""
    raw: dict[str, tuple[dict[str, Any], Path]] = {}
    for path in sorted(SHIPPED_DIR.glob("*.yaml")):
        data = _read(path)
        raw[str(data.get("id"))] = (data, path)
    site = Path(site_dir or os.environ.get("ALLIANCE_QI_INSTRUMENTS_DIR") or SITE_DIR)
    for path in sorted(site.glob("*.yaml")) if site.is_dir() else []:
        data = _read(path)
        if "extends" in data:
            target = data["extends"]
            if target not in raw:
                raise RegistryError(f"{path}: extends unknown instrument {target!r}")
            raw[target] = (_merge_site(raw[target][0], data, path.name), path)
        else:
            raw[str(data.get("id"))] = (data, path)
    out: dict[str, Instrument] = {}
    for key, (data, path) in raw.items():
        try:
            out[key] = Instrument.model_validate({**data, "source_file": path.name})
        except ValidationError as exc:
            raise RegistryError(f"{path}: {exc}") from exc
    return out


def registry_fingerprint(registry: Mapping[str, Instrument]) -> str:
    """A hash of every instrument definition: changes when any registry or site file changes meaning."""
    text = json.dumps({k: v.model_dump(mode="json") for k, v in sorted(registry.items())}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
