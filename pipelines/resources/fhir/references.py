"""FHIR reference parsing for Python code (the client, Questionnaire resolution).

The same pattern as the SQL macros in `pipelines/sql/macros.sql` (`ref_type`, `ref_id`, `ref_key`,
`ref_contained`); `tests/unit/test_references.py` runs both over one table of cases so they cannot drift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Type, id and optional `_history/<version>` at the end of a relative or absolute literal reference.
ID_PATTERN = r"[A-Za-z0-9.\-]{1,64}"
REFERENCE_PATTERN = rf"(?:^|/)([A-Z][A-Za-z]+)/({ID_PATTERN})(?:/_history/{ID_PATTERN})?$"
# `\Z`, not `$`: Python's `$` also matches before a trailing newline, DuckDB's (RE2) does not.
_REFERENCE = re.compile(
    rf"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>{ID_PATTERN})(?:/_history/(?P<vid>{ID_PATTERN}))?\Z"
)
_RELATIVE = re.compile(rf"(?P<type>[A-Z][A-Za-z]+)/(?P<id>{ID_PATTERN})(?:/_history/(?P<vid>{ID_PATTERN}))?")


@dataclass(frozen=True)
class Reference:
    """A parsed literal reference: `Type/id`, optionally versioned, optionally absolute."""

    type: str
    id: str
    version: str | None = None

    @property
    def key(self) -> str:
        """`Type/id` (no base URL, no version)."""
        return f"{self.type}/{self.id}"


def parse_reference(reference: str | None) -> Reference | None:
    """The type, id and version a literal reference points to; None for contained (`#id`), logical
    (`urn:uuid:...`) or malformed references."""
    if not reference:
        return None
    m = _REFERENCE.search(reference)
    return Reference(m["type"], m["id"], m["vid"]) if m else None


def is_relative_reference(path: str) -> bool:
    """Is `path` exactly `Type/id` or `Type/id/_history/vid` (no base URL, nothing else)?"""
    return _RELATIVE.fullmatch(path) is not None


def contained_id(reference: str | None) -> str | None:
    """The id of the contained resource a `#id` reference points to, else None."""
    if reference and reference.startswith("#") and len(reference) > 1:
        return reference[1:]
    return None
