"""Which instrument is a response to, and which of its items does each linkId answer?

Works per *form* (distinct `QuestionnaireResponse.questionnaire` value per source), never per
response: a clinic has tens of forms and millions of responses. The steps:

1. **Resolve** the cited questionnaire to a landed Questionnaire: by canonical `url|version` (the
   newest version when none is given, or when the cited version is not on any source), else as a
   literal reference `Questionnaire/{id}` (forms without a `url`, such as NLM LHC-Forms, are cited
   that way). Same-source Questionnaires win over other sources.
2. **Recognise** the instrument, in order of trust: a canonical URL listed in the registry; the
   Questionnaire's `code` or `identifier` (e.g. LOINC panel 44249-1); most of its items carrying an
   instrument's item codes (vendor forms with random linkIds); most of its linkIds being an
   instrument's linkIds.
3. **Map items**: each form item to an instrument item number by linkId or item code, or to the
   instrument's embedded total, or to an item the instrument ignores (the PHQ-9 difficulty item).
   When the Questionnaire cannot be resolved but its URL is in the registry, the registry's own
   linkIds are used.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from fhir_mappings.registry import Instrument
from pipelines.resources.fhir.references import parse_reference

_NON_ANSWER_TYPES = frozenset({"group", "display"})
# Share of an instrument's items a form must carry (by item code or linkId) to be recognised by them.
MIN_ITEM_SHARE = 0.5


@dataclass(frozen=True)
class FormItemDef:
    """One item of a landed Questionnaire."""

    link_id: str
    codes: tuple[str, ...] = ()
    type: str | None = None


@dataclass(frozen=True)
class QuestionnaireDef:
    """What recognition needs of one landed Questionnaire (newest version of its id)."""

    source: str
    id: str
    url: str | None = None
    version: str | None = None
    codes: tuple[str, ...] = ()  # 'system|code'
    identifiers: tuple[str, ...] = ()  # 'system|value'
    items: tuple[FormItemDef, ...] = ()
    last_updated: str = ""


@dataclass(frozen=True)
class ItemMapping:
    """A form linkId mapped onto an instrument: an item number, the embedded total, or ignored."""

    link_id: str
    role: str  # 'item' | 'total' | 'ignored'
    item_number: int | None
    mapped_by: str  # 'link_id' | 'item_code' | 'registry_link_id'


@dataclass
class FormResolution:
    """Outcome for one cited questionnaire value on one source."""

    source: str
    questionnaire: str
    questionnaire_source: str | None = None
    questionnaire_id: str | None = None
    questionnaire_version: str | None = None
    resolution: str = "unresolved"  # canonical | canonical-latest | canonical-other-version | reference
    instrument: str | None = None
    recognised_by: str | None = None
    reason: str | None = None  # unmapped reason when no instrument can score it
    detail: str | None = None
    items: list[ItemMapping] = field(default_factory=list)


def literal_questionnaire_id(url: str) -> str | None:
    """The id when `url` is a literal reference to a Questionnaire (relative or absolute, possibly
    versioned), else None. Parsed by the project's one reference parser (references.py)."""
    ref = parse_reference(url)
    return ref.id if ref is not None and ref.type == "Questionnaire" else None


def split_canonical(value: str) -> tuple[str, str | None]:
    """'url|version' -> (url, version); a bare url -> (url, None)."""
    url, _, version = value.partition("|")
    return url, (version or None)


def _version_key(version: str | None, last_updated: str) -> tuple[tuple[int, int | str], ...]:
    """Order versions naturally ('1.10' after '1.9'); unversioned and ties fall back to lastUpdated."""
    parts: list[tuple[int, int | str]] = []
    for piece in re.split(r"[.\-]", version or ""):
        parts.append((1, int(piece)) if piece.isdigit() else (0, piece))
    return (*parts, (0, last_updated))


def _pick(candidates: list[QuestionnaireDef], source: str) -> QuestionnaireDef:
    same = [q for q in candidates if q.source == source] or candidates
    return max(same, key=lambda q: _version_key(q.version, q.last_updated))


def resolve(
    cited: str, source: str, questionnaires: Iterable[QuestionnaireDef]
) -> tuple[QuestionnaireDef | None, str]:
    """Find the Questionnaire a response cites. Returns (questionnaire or None, how it was found)."""
    qs = list(questionnaires)
    url, version = split_canonical(cited.strip())
    if not url:
        return None, "unresolved"
    by_url = [q for q in qs if q.url == url]
    if by_url:
        if version is None:
            return _pick(by_url, source), "canonical-latest"
        exact = [q for q in by_url if q.version == version]
        if exact:
            return _pick(exact, source), "canonical"
        # The cited version is on no source: score with the newest one (linkIds rarely change between
        # versions) and say so in the resolution column.
        return _pick(by_url, source), "canonical-other-version"
    literal_id = literal_questionnaire_id(url)
    if literal_id is not None:
        by_id = [q for q in qs if q.id == literal_id and (q.url is None or q.url == url)]
        # An absolute canonical of another organisation must not match a local id by accident: only
        # relative references, or Questionnaires without a url (which can only be cited literally).
        if not url.startswith("Questionnaire/"):
            by_id = [q for q in by_id if q.url is None]
        if by_id:
            return _pick(by_id, source), "reference"
    return None, "unresolved"


def _code_matches(form_value: str, wanted_system: str | None, wanted_code: str) -> bool:
    system, _, code = form_value.partition("|")
    return code == wanted_code and (not system or not wanted_system or system == wanted_system)


def _answerable(q: QuestionnaireDef) -> list[FormItemDef]:
    return [i for i in q.items if i.type not in _NON_ANSWER_TYPES]


def recognise(
    q: QuestionnaireDef | None, url: str, registry: Mapping[str, Instrument]
) -> tuple[str | None, str | None, str | None]:
    """(instrument id, how it was recognised, detail when ambiguous) for a cited form."""
    hits = [k for k, inst in registry.items() if url and url in inst.recognise.canonical_urls]
    if hits:
        return (hits[0], "canonical_url", None) if len(hits) == 1 else (None, None, f"ambiguous: {hits}")
    if q is None:
        return None, None, None
    by_code = [
        k
        for k, inst in registry.items()
        if any(
            _code_matches(v, c.system, c.code)
            for c in inst.recognise.questionnaire_codes
            for v in (*q.codes, *q.identifiers)
        )
    ]
    if len(by_code) == 1:
        return by_code[0], "questionnaire_code", None
    if len(by_code) > 1:
        return None, None, f"questionnaire codes match several instruments: {sorted(by_code)}"
    items = _answerable(q)
    for how, share in (
        ("item_codes", lambda inst: _share(inst, {c for i in items for c in i.codes}, "codes")),
        ("link_ids", lambda inst: _share(inst, {i.link_id for i in items}, "link_ids")),
    ):
        scores = {k: share(inst) for k, inst in registry.items()}
        best = max(scores.values(), default=0.0)
        if best >= MIN_ITEM_SHARE:
            top = [k for k, v in scores.items() if v == best]
            if len(top) == 1:
                return top[0], how, None
            return None, None, f"{how} match several instruments equally: {sorted(top)}"
    return None, None, None


def _share(inst: Instrument, present: set[str], attr: str) -> float:
    """Share of the instrument's items that the form carries, by item code or linkId."""
    found = sum(1 for item in inst.items if present & set(getattr(item, attr)))
    return found / len(inst.items)


def map_items(q: QuestionnaireDef | None, inst: Instrument) -> list[ItemMapping]:
    """Map the form's linkIds onto the instrument (form items first, then the registry's linkIds)."""
    by_link = {lid: item.number for item in inst.items for lid in item.link_ids}
    by_code = {code: item.number for item in inst.items for code in item.codes}
    total = inst.reported_total or None
    ignored = inst.ignored_items or None
    out: dict[str, ItemMapping] = {}

    def special(link_id: str, codes: Iterable[str]) -> str | None:
        codes = set(codes)
        if total and (link_id in total.link_ids or codes & set(total.codes)):
            return "total"
        if ignored and (link_id in ignored.link_ids or codes & set(ignored.codes)):
            return "ignored"
        return None

    for item in q.items if q else ():
        if item.type in _NON_ANSWER_TYPES:
            continue
        role = special(item.link_id, item.codes)
        if role:
            out[item.link_id] = ItemMapping(item.link_id, role, None, "item_code")
        elif item.link_id in by_link:
            out[item.link_id] = ItemMapping(item.link_id, "item", by_link[item.link_id], "link_id")
        else:
            numbers = {by_code[c] for c in item.codes if c in by_code}
            if len(numbers) == 1:
                out[item.link_id] = ItemMapping(item.link_id, "item", numbers.pop(), "item_code")
    for link_id, number in by_link.items():
        out.setdefault(link_id, ItemMapping(link_id, "item", number, "registry_link_id"))
    for ref, role in ((total, "total"), (ignored, "ignored")):
        for link_id in ref.link_ids if ref else ():
            out.setdefault(link_id, ItemMapping(link_id, role, None, "registry_link_id"))
    return sorted(out.values(), key=lambda m: (m.role, m.item_number or 0, m.link_id))


def resolve_forms(
    cited: Iterable[tuple[str, str | None]],
    questionnaires: Iterable[QuestionnaireDef],
    registry: Mapping[str, Instrument],
) -> list[FormResolution]:
    """Resolve, recognise and map every distinct (source, cited questionnaire) pair."""
    qs = list(questionnaires)
    out: list[FormResolution] = []
    for source, value in sorted(set(cited), key=lambda p: (p[0], p[1] or "")):
        res = FormResolution(source=source, questionnaire=value or "")
        out.append(res)
        if not value or not value.strip():
            res.reason, res.detail = "unknown questionnaire", "the response names no questionnaire"
            continue
        q, how = resolve(value, source, qs)
        url, version = split_canonical(value.strip())
        if q is not None:
            res.questionnaire_source, res.questionnaire_id = q.source, q.id
            res.questionnaire_version, res.resolution = q.version, how
        instrument, recognised_by, ambiguity = recognise(q, url, registry)
        if instrument is None:
            if q is None and literal_questionnaire_id(url) and url.startswith("Questionnaire/"):
                res.reason = "unresolvable canonical"
                res.detail = f"{value}: no Questionnaire with that id on any source"
            elif q is None:
                res.reason = "unknown questionnaire"
                res.detail = f"{value}: not on any source and not in the instrument registry"
            else:
                res.reason = "unknown questionnaire"
                res.detail = ambiguity or (
                    f"{value} (Questionnaire/{q.id}) matches no registry instrument by url, code, "
                    "item codes or linkIds"
                )
            continue
        res.instrument, res.recognised_by = instrument, recognised_by
        res.items = map_items(q, registry[instrument])
        if q is None:
            res.detail = f"{value}: not on any source; mapped by the registry's linkIds"
        elif how == "canonical-other-version":
            res.detail = f"version {version} not on any source; scored with version {q.version}"
    return out


def questionnaire_defs(
    forms: Iterable[Mapping[str, object]], items: Iterable[Mapping[str, object]]
) -> list[QuestionnaireDef]:
    """Build QuestionnaireDefs from rows of staging.questionnaires and staging.questionnaire_items."""
    by_q: dict[tuple[str, str], list[FormItemDef]] = defaultdict(list)
    for row in sorted(items, key=lambda r: int(str(r["item_order"]))):
        if row["link_id"] is None:
            continue
        key = (str(row["source"]), str(row["questionnaire_id"]))
        codes = tuple(str(c) for c in (row["codes"] or ()))  # type: ignore[attr-defined]
        by_q[key].append(FormItemDef(str(row["link_id"]), codes, _opt(row["type"])))
    out = []
    for f in forms:
        key = (str(f["source"]), str(f["questionnaire_id"]))
        out.append(
            QuestionnaireDef(
                source=key[0],
                id=key[1],
                url=_opt(f["url"]),
                version=_opt(f["version"]),
                codes=tuple(str(c) for c in (f["codes"] or ())),  # type: ignore[attr-defined]
                identifiers=tuple(str(c) for c in (f["identifiers"] or ())),  # type: ignore[attr-defined]
                items=tuple(by_q.get(key, ())),
                last_updated=str(f["last_updated"] or ""),
            )
        )
    return out


def _opt(value: object) -> str | None:
    return None if value is None else str(value)
