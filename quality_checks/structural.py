"""Structural validation of FHIR R4 resources with `fhir.resources` R4B models.

R4 data is validated with the R4B models: `fhir.resources` 8 has no R4 module and its default
(R5) models refuse R4 QuestionnaireResponses (measured with 8.3). R4B is a superset-compatible R4 release
for every element this pipeline reads.

Every finding is recorded. Whether a resource is *rejected* depends on the mode:
- `used_elements` (default): only when it cannot be parsed at all or a finding touches an element
  the pipeline reads (declared per type in USED_ELEMENTS). Real forms break rules in parts nobody
  reads: NLM's LHC-Forms PHQ-9 gives `questionnaire-optionPrefix` as a number and uses
  underscores in expression names, and its responses must still be scored.
- `strict`: any finding rejects.

Speed: the full model costs ~0.35 ms per QuestionnaireResponse. By default the validator takes an
exact fast path (`quality_checks/shape_cache.py`): the first resource of each shape is validated by
the full model, and later resources of a shape the model found clean only have their primitive
values checked, each with the model's own validator for that field. Whenever anything fails, or the
shape is one the fast path does not cover, the full model runs, so outcomes, findings and messages
are the model's. `StructuralValidator(fast_path=False)` always runs the full model;
`validator.stats` counts both paths. See docs/raw-layer.md, "Validation speed".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from pipelines.settings import ValidationMode
from quality_checks.shape_cache import ShapeCache

# Elements the pipeline reads, per resource type, as dotted paths without list indices. Nested
# questionnaire items (`item.item`, `item.answer.item`) are folded onto `item` before matching.
USED_ELEMENTS: dict[str, tuple[str, ...]] = {
    "QuestionnaireResponse": (
        "id",
        "meta.versionId",
        "meta.lastUpdated",
        "status",
        "questionnaire",
        "subject",
        "encounter",
        "authored",
        "source",
        "author",
        "basedOn",
        "partOf",
        "item.linkId",
        "item.answer",
        "item.item",
    ),
    "Questionnaire": (
        "id",
        "meta.versionId",
        "meta.lastUpdated",
        "url",
        "version",
        "status",
        "code",
        "identifier",
        "contained",
        "item.linkId",
        "item.code",
        "item.type",
        "item.item",
        "item.answerValueSet",
        "item.answerOption.valueCoding",
        "item.answerOption.valueInteger",
        "item.answerOption.valueString",
        "item.answerOption.extension.url",
        "item.answerOption.extension.valueDecimal",
        "item.answerOption.extension.valueInteger",
    ),
    "Patient": (
        "id",
        "meta.versionId",
        "meta.lastUpdated",
        "birthDate",
        "gender",
        "active",
        "managingOrganization",
        "deceasedBoolean",
        "deceasedDateTime",
    ),
    "Practitioner": ("id", "meta.versionId", "meta.lastUpdated", "active"),
    "PractitionerRole": (
        "id",
        "meta.versionId",
        "meta.lastUpdated",
        "active",
        "practitioner",
        "organization",
        "period",
    ),
    "EpisodeOfCare": (
        "id",
        "meta.versionId",
        "meta.lastUpdated",
        "status",
        "patient",
        "managingOrganization",
        "period",
        "careManager",
        "team",
    ),
    "Encounter": (
        "id",
        "meta.versionId",
        "meta.lastUpdated",
        "status",
        "class",
        "type",
        "subject",
        "period",
        "episodeOfCare",
        "participant.individual",
        "serviceProvider",
        "appointment",
    ),
    "Appointment": (
        "id",
        "meta.versionId",
        "meta.lastUpdated",
        "status",
        "start",
        "end",
        "participant.actor",
        "participant.status",
        "basedOn",
    ),
    "MedicationRequest": (
        "id",
        "meta.versionId",
        "meta.lastUpdated",
        "status",
        "intent",
        "subject",
        "encounter",
        "authoredOn",
        "medicationCodeableConcept",
        "medicationReference",
        "dispenseRequest",
    ),
    "MedicationDispense": (
        "id",
        "meta.versionId",
        "meta.lastUpdated",
        "status",
        "subject",
        "medicationCodeableConcept",
        "medicationReference",
        "whenHandedOver",
        "whenPrepared",
        "daysSupply",
        "quantity",
        "authorizingPrescription",
    ),
}

# Required bindings the R4B models do not enforce (they accept any code string), for the top-level
# `status`-like elements the pipeline reads. Values from the R4 value sets.
REQUIRED_CODES: dict[str, dict[str, frozenset[str]]] = {
    "QuestionnaireResponse": {
        "status": frozenset({"in-progress", "completed", "amended", "entered-in-error", "stopped"})
    },
    "Questionnaire": {"status": frozenset({"draft", "active", "retired", "unknown"})},
    "Encounter": {
        "status": frozenset(
            {
                "planned",
                "arrived",
                "triaged",
                "in-progress",
                "onleave",
                "finished",
                "cancelled",
                "entered-in-error",
                "unknown",
            }
        )
    },
    "EpisodeOfCare": {
        "status": frozenset(
            {"planned", "waitlist", "active", "onhold", "finished", "cancelled", "entered-in-error"}
        )
    },
    "Appointment": {
        "status": frozenset(
            {
                "proposed",
                "pending",
                "booked",
                "arrived",
                "fulfilled",
                "cancelled",
                "noshow",
                "entered-in-error",
                "checked-in",
                "waitlist",
            }
        )
    },
    "MedicationRequest": {
        "status": frozenset(
            {"active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft", "unknown"}
        ),
        "intent": frozenset(
            {
                "proposal",
                "plan",
                "order",
                "original-order",
                "reflex-order",
                "filler-order",
                "instance-order",
                "option",
            }
        ),
    },
    "MedicationDispense": {
        "status": frozenset(
            {
                "preparation",
                "in-progress",
                "cancelled",
                "on-hold",
                "completed",
                "entered-in-error",
                "stopped",
                "declined",
                "unknown",
            }
        )
    },
    "Patient": {"gender": frozenset({"male", "female", "other", "unknown"})},
}
_ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

Mode = ValidationMode  # one definition: the sources file, the warehouse resource, the validator


@dataclass(frozen=True)
class Finding:
    """One validation finding: where (`path`, with list indices) and what."""

    path: str
    message: str
    error_type: str
    blocking: bool


@dataclass
class ValidationOutcome:
    """Result for one resource: `rejected` with a one-line `reason`, plus every finding."""

    rejected: bool
    reason: str | None = None
    findings: list[Finding] = field(default_factory=list)


def _display_path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def normalize_path(loc: Iterable[Any]) -> str:
    """Dotted path without indices, nested items folded: ('item',0,'item',1,'linkId') -> item.linkId."""
    dotted = ".".join(str(p) for p in loc if not isinstance(p, int))
    dotted = dotted.replace("answer.item", "item")
    while ".item.item" in dotted or dotted.startswith("item.item"):
        dotted = dotted.replace("item.item", "item")
    return dotted


def touches(path: str, used: Iterable[str]) -> bool:
    """True when a finding at `path` concerns a used element, or a parent that contains one."""
    if not path:
        return True  # a finding on the whole resource cannot be placed: treat it as touching
    for u in used:
        if path == u or path.startswith(u + ".") or u.startswith(path + "."):
            return True
    return False


@lru_cache(maxsize=64)
def _model_class(resource_type: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class  # imported lazily: ~1 s

    return get_fhir_model_class(resource_type)


@dataclass
class ValidatorStats:
    """How many resources took which path through `StructuralValidator.validate`.

    `full_validations` ran the R4B model; `fast_path_hits` were accepted from a clean shape after
    their primitives passed. The full validations split into `new_shapes` (first of a shape, or a
    shape evicted since), `primitive_fallbacks` (a clean shape whose primitives failed: the model
    then gives the exact findings) and `uncovered` (shapes the fast path never takes: extensions,
    contained resources, ...). `shapes_cached` is the number of clean shapes held now.
    """

    full_validations: int = 0
    fast_path_hits: int = 0
    new_shapes: int = 0
    primitive_fallbacks: int = 0
    uncovered: int = 0
    shapes_cached: int = 0
    shape_evictions: int = 0

    def as_dict(self) -> dict[str, int]:
        """Plain dict, e.g. for Dagster metadata."""
        return {
            "full_validations": self.full_validations,
            "fast_path_hits": self.fast_path_hits,
            "new_shapes": self.new_shapes,
            "primitive_fallbacks": self.primitive_fallbacks,
            "uncovered": self.uncovered,
            "shapes_cached": self.shapes_cached,
            "shape_evictions": self.shape_evictions,
        }


class StructuralValidator:
    """Validate resource dicts against R4B models and decide rejection per the mode.

    `fast_path` (default on) validates each resource shape once with the full model and later
    resources of a clean shape by their primitives only; outcomes are identical either way
    (tests/unit/test_structural_fast_path.py proves it). `max_shapes` bounds the shape cache (LRU).
    Not thread-safe: use one validator per landing run.
    """

    def __init__(
        self,
        mode: Mode = "used_elements",
        used_elements: Mapping[str, Iterable[str]] | None = None,
        *,
        fast_path: bool = True,
        max_shapes: int = 4096,
    ) -> None:
        self.mode: Mode = mode
        self.used = {k: tuple(v) for k, v in (used_elements or USED_ELEMENTS).items()}
        self.fast_path = fast_path
        self.max_shapes = max_shapes
        self._shapes: ShapeCache | None = ShapeCache(max_shapes) if fast_path else None
        self._stats = ValidatorStats()
        # Validations done by copies of this validator in worker processes (pipelines.ndjson_landing).
        self.elsewhere_seconds = 0.0
        self.elsewhere_validations = 0

    def absorb_stats(self, added: Mapping[str, int], seconds: float, validations: int) -> None:
        """Add the counters of a copy of this validator that ran elsewhere (a worker process)."""
        for name, value in added.items():
            setattr(self._stats, name, getattr(self._stats, name) + value)
        self.elsewhere_seconds += seconds
        self.elsewhere_validations += validations

    @property
    def stats(self) -> ValidatorStats:
        """Counters of full-model validations and fast-path hits since this validator was made."""
        if self._shapes is not None:
            self._stats.shapes_cached = len(self._shapes)
            self._stats.shape_evictions = self._shapes.evictions
        return self._stats

    def validate(self, resource: Any, expected_type: str | None = None) -> ValidationOutcome:
        """Validate one resource. Never raises for bad input: the outcome says why it is rejected."""
        if not isinstance(resource, dict):
            return ValidationOutcome(True, "unparseable: not a JSON object")
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str):
            return ValidationOutcome(True, "unparseable: no resourceType")
        if expected_type and rtype != expected_type:
            return ValidationOutcome(True, f"unexpected resourceType {rtype!r} (expected {expected_type})")
        rid = resource.get("id")
        if not isinstance(rid, str) or not _ID_PATTERN.match(rid):
            return ValidationOutcome(True, f"invalid or missing id: {rid!r}")
        try:
            model = _model_class(rtype)
        except (KeyError, ValueError, AttributeError, ImportError):
            return ValidationOutcome(True, f"unknown resource type {rtype!r}")
        used = self.used.get(rtype, ())
        # Binding checks are not part of the model: they run for every resource, on both paths.
        findings = self._binding_findings(rtype, resource, used)
        hit, shape_key = self._fast_path(model, rtype, resource)
        if hit:
            return self._judge(findings)
        self._stats.full_validations += 1
        try:
            model.model_validate(resource)
        except ValidationError as exc:
            findings.extend(self._model_findings(exc, used))
        except Exception as exc:
            # Model-level validators can raise plain errors on malformed input (TypeError, ValueError,
            # AttributeError: FHIRPrimitiveExtension calls `.get` on whatever `_status` holds, and
            # RecursionError on items nested a few hundred deep); these raised out of validate()
            # before. Bad input must become a rejection.
            f = Finding("", str(exc)[:500], type(exc).__name__, True)
            return ValidationOutcome(True, f"unparseable: {str(exc)[:200]}", [*findings, f])
        else:
            # The model found nothing: later resources of this shape need only their primitives checked.
            if self._shapes is not None and shape_key is not None:
                self._shapes.remember(shape_key)
        return self._judge(findings)

    def _fast_path(self, model: Any, rtype: str, resource: dict[str, Any]) -> tuple[bool, Any]:
        """(True, None) when the model would find nothing: a clean shape whose primitives all pass.
        Otherwise (False, key): the shape key to remember if the full model then finds nothing, or
        None when there is nothing to remember (no fast path for this resource, or already known)."""
        if self._shapes is None:
            return False, None
        if getattr(model, "__resource_type__", None) != rtype:
            self._stats.uncovered += 1
            return False, None
        try:
            probe = self._shapes.probe(model, resource)
        except RecursionError:  # nesting deeper than Python's stack: the model decides (and reports)
            probe = None
        if probe is None:
            self._stats.uncovered += 1
            return False, None
        signature, leaves = probe
        key = (rtype, self.mode, signature)
        if not self._shapes.is_clean(key):
            self._stats.new_shapes += 1
            return False, key
        if self._shapes.primitives_ok(leaves):
            self._stats.fast_path_hits += 1
            return True, None
        self._stats.primitive_fallbacks += 1
        return False, None  # the shape is already recorded; the model now gives the exact findings

    def _binding_findings(self, rtype: str, resource: dict[str, Any], used: tuple[str, ...]) -> list[Finding]:
        out: list[Finding] = []
        for element, allowed in REQUIRED_CODES.get(rtype, {}).items():
            value = resource.get(element)
            # isinstance first: `[] in frozenset()` raises TypeError, and validate() must never raise.
            if value is not None and not (isinstance(value, str) and value in allowed):
                blocking = self.mode == "strict" or touches(element, used)
                out.append(
                    Finding(
                        element, f"code {value!r} is not in the required value set", "code_binding", blocking
                    )
                )
        return out

    def _model_findings(self, exc: ValidationError, used: tuple[str, ...]) -> list[Finding]:
        findings: list[Finding] = []
        for err in exc.errors(include_url=False):
            loc = err.get("loc", ())
            blocking = self.mode == "strict" or touches(normalize_path(loc), used)
            findings.append(
                Finding(_display_path(loc), str(err.get("msg", ""))[:500], str(err.get("type", "")), blocking)
            )
        return findings

    @staticmethod
    def _judge(findings: list[Finding]) -> ValidationOutcome:
        if not findings:
            return ValidationOutcome(False)
        blocking_findings = [f for f in findings if f.blocking]
        if not blocking_findings:
            return ValidationOutcome(False, None, findings)
        first = blocking_findings[0]
        more = f" (+{len(blocking_findings) - 1} more)" if len(blocking_findings) > 1 else ""
        reason = f"invalid {first.path or 'resource'}: {first.message}{more}"
        return ValidationOutcome(True, reason, findings)
