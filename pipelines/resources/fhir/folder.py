"""Read FHIR resources from a folder of NDJSON / JSON files (an EHR drop, a Bulk export, test data).

Nothing is dropped silently: every non-blank NDJSON line and every JSON file produces at least one
item, and a line that is not a FHIR resource comes back with `resource=None` and the reason, so
the caller can put it in the rejected table with its origin.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

__all__ = ["folder_files", "iter_folder", "iter_json_file"]

_BOM = b"\xef\xbb\xbf"  # Windows tools write one at the start of UTF-8 exports


def _as_resource(data: Any) -> tuple[dict[str, Any] | None, str | None]:
    if not isinstance(data, dict):
        return None, f"not a JSON object (got {type(data).__name__})"
    if not isinstance(data.get("resourceType"), str):
        return None, "JSON object without resourceType"
    return data, None


def _iter_ndjson(path: Path, origin: str) -> Iterator[tuple[dict[str, Any] | None, str, str | None]]:
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            line = raw.removeprefix(_BOM) if number == 1 else raw
            if not line.strip():
                continue
            where = f"{origin}:{number}"
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield None, where, f"invalid JSON: {exc}"
                continue
            resource, error = _as_resource(data)
            yield resource, where, error


def _iter_json(path: Path, origin: str) -> Iterator[tuple[dict[str, Any] | None, str, str | None]]:
    try:
        data = orjson.loads(path.read_bytes().removeprefix(_BOM))
    except orjson.JSONDecodeError as exc:
        yield None, f"{origin}:1", f"invalid JSON: {exc}"
        return
    resource, error = _as_resource(data)
    if resource is None or resource["resourceType"] != "Bundle":
        yield resource, f"{origin}:1", error
        return
    entries = resource.get("entry") or []
    if not isinstance(entries, list):
        yield None, f"{origin}:1", "Bundle.entry is not a list"
        return
    for i, entry in enumerate(entries):
        where = f"{origin}#entry[{i}]"
        inner = entry.get("resource") if isinstance(entry, dict) else None
        if inner is None:
            yield None, where, "Bundle entry without a resource"
            continue
        inner_resource, inner_error = _as_resource(inner)
        yield inner_resource, where, inner_error


def typed_file_of(name: str, types: Iterable[str]) -> str | None:
    """The resource type a Bulk-style file name declares (`Patient.ndjson`, `Patient.001.ndjson`,
    `Patient-2.ndjson`), when it is one of `types`; None for any other name."""
    head = re.split(r"[.\-_]", name, maxsplit=1)[0]
    return head if head in set(types) else None


def iter_folder(
    path: Path,
    only_type: str | None = None,
    known_types: Iterable[str] = (),
    skip_file: Callable[[Path], bool] | None = None,
) -> Iterator[tuple[dict[str, Any] | None, str, str | None]]:
    """Yield `(resource or None, origin, parse_error or None)` for every resource under `path`.

    `*.ndjson`: one item per non-blank line, origin `file:line`. `*.json`: the resource it holds
    (origin `file:1`), or each entry of a Bundle (origin `file#entry[i]`). Files are read in sorted
    order of their path relative to `path` (subfolders included), so reruns give the same order.
    Origins are relative paths. A single file may be passed as `path`.

    With `only_type`, NDJSON files whose name declares another of `known_types` (Bulk naming,
    `Encounter.ndjson`) are not read: a pull of one type then parses only its own files (and any
    file whose name declares no type), instead of every file once per type. `skip_file` leaves out
    files the caller has already landed unchanged.
    """
    root = path.parent if path.is_file() else path
    for file in folder_files(path):
        if skip_file is not None and skip_file(file):
            continue
        if only_type and file.suffix == ".ndjson":
            declared = typed_file_of(file.name, known_types)
            if declared is not None and declared != only_type:
                continue
        origin = file.relative_to(root).as_posix()
        if file.suffix == ".ndjson":
            yield from _iter_ndjson(file, origin)
        elif file.suffix == ".json":
            yield from _iter_json(file, origin)


def folder_files(path: Path) -> list[Path]:
    """The `*.ndjson` and `*.json` files under `path` (or `path` itself), in the order they are read:
    sorted by their path relative to `path`, subfolders included."""
    if path.is_file():
        return [path]
    return sorted(
        (p for p in path.rglob("*") if p.is_file() and p.suffix in (".ndjson", ".json")),
        key=lambda p: p.relative_to(path).as_posix(),
    )


def iter_json_file(path: Path, origin: str) -> Iterator[tuple[dict[str, Any] | None, str, str | None]]:
    """Like `iter_folder` for one `*.json` file (a resource or a Bundle), with origins under `origin`."""
    yield from _iter_json(path, origin)


def iter_ndjson_file(path: Path) -> Iterator[tuple[dict[str, Any] | None, str, str | None]]:
    """Like `iter_folder` for one NDJSON file (e.g. a Bulk export output); origins `path:line`."""
    yield from _iter_ndjson(path, str(path))
