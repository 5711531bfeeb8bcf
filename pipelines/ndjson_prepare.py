"""Prepare blocks of NDJSON lines for landing: the per-line work, run in worker processes.

Imports nothing heavy (no DuckDB, no pandas): a worker process starts in a fraction of a second.
The main side is `pipelines.ndjson_landing`.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson

from pipelines.landing_items import LandingItem, prepare_item
from quality_checks.structural import StructuralValidator

_BOM = b"\xef\xbb\xbf"
# Marks an item whose stored text is its line exactly as received (compact JSON): the line is not
# sent back from the worker, the main process has it. Not valid JSON, so it can never be real text.
LINE_TEXT = "\x00line"
_ADDITIVE_STATS = ("full_validations", "fast_path_hits", "new_shapes", "primitive_fallbacks", "uncovered")


@dataclass(frozen=True)
class BlockJob:
    """What `prepare_block` needs besides the bytes: where the lines come from and what to keep."""

    origin_prefix: str  # origins are f"{origin_prefix}:{line number}"
    only_type: str | None  # keep resources of this type only (folder files); None keeps all (Bulk)
    keep_unparseable: bool  # land lines that are not resources (once, under their file's type)
    expected_type: str  # what the validator expects
    validate: bool  # validate here (a first load), or leave it to the main process


def _line_text(raw: bytes) -> str:
    """A line's text as received, for `raw.rejected` (undecodable bytes replaced)."""
    return raw.decode("utf-8", errors="replace").rstrip("\r\n")


@dataclass
class BlockResult:
    """A prepared block: items with their line's index in the block, and the validation done."""

    items: list[tuple[int, LandingItem]]
    stats: dict[str, int]  # validator counters added while preparing
    seconds: float = 0.0  # spent validating
    validations: int = 0


def prepare_block(
    block: bytes, first_line: int, job: BlockJob, validator: StructuralValidator | None
) -> BlockResult:
    """Prepare the lines of `block` (whole lines; `first_line` is the number of its first).

    Each item comes with its line's index in the block. Blank lines and resources of other types
    yield nothing, as in `pipelines.resources.fhir.folder.iter_folder`. Items carry no parsed dict:
    a worker's would have to be pickled back, and the main process only needs the text.
    """
    before = dict(validator.stats.as_dict()) if validator is not None else {}
    validating = 0.0
    validations = 0
    out: list[tuple[int, LandingItem]] = []
    lines = block.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the block ends with a newline
    # Lines before `last` ended with a newline in the file (only the file's last line may not).
    last = len(lines) - 1 if not block.endswith(b"\n") else len(lines)
    for index, raw in enumerate(lines):
        number = first_line + index
        line = raw.removeprefix(_BOM) if number == 1 else raw
        if not line.strip():
            continue
        origin = f"{job.origin_prefix}:{number}"
        error: str | None = None
        resource: Any = None
        try:
            resource = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            error = f"invalid JSON: {_decode_error(line, exc, ends_line=index < last)}"
        else:
            if not isinstance(resource, dict):
                error = f"not a JSON object (got {type(resource).__name__})"
            elif not isinstance(resource.get("resourceType"), str):
                error = "JSON object without resourceType"
        if error is not None:
            if job.keep_unparseable:
                out.append((index, prepare_item(None, origin, parse_error=error, text=_line_text(raw))))
            continue
        if job.only_type is not None and resource["resourceType"] != job.only_type:
            continue
        try:
            dumped: bytes | None = orjson.dumps(resource)
        except orjson.JSONEncodeError:
            dumped = None  # too deep to store: prepare_item rejects it with the reason
        # The line itself (not `line`: a first line keeps its byte-order mark there) when it is the
        # compact serialisation already, which the main process holds.
        text = None if dumped is None else (LINE_TEXT if dumped == raw.rstrip(b"\r\n") else dumped.decode())
        item = prepare_item(resource, origin, text=text, text_as_received=partial(_line_text, raw))
        if item.parsed and validator is not None:
            t0 = time.perf_counter()
            item.outcome = validator.validate(resource, expected_type=job.expected_type)
            validating += time.perf_counter() - t0
            validations += 1
        item.resource = None
        out.append((index, item))
    added = {}
    if validator is not None:
        after = validator.stats.as_dict()
        added = {k: after[k] - before[k] for k in _ADDITIVE_STATS}
    return BlockResult(out, added, validating, validations)


def _decode_error(line: bytes, exc: orjson.JSONDecodeError, *, ends_line: bool) -> str:
    """orjson's message for the line as a file iterator yields it (newline included), so a reason
    in `raw.rejected` reads the same whichever way the file was landed: a line cut short inside a
    string is an "unexpected control character", not an "unexpected end of data"."""
    if not ends_line:
        return str(exc)
    try:
        orjson.loads(line + b"\n")
    except orjson.JSONDecodeError as with_newline:
        return str(with_newline)
    return str(exc)


# --- worker processes -----------------------------------------------------------------------------

_WORKER_VALIDATOR: StructuralValidator | None = None


def worker_init(config: dict[str, Any]) -> None:
    """Worker process start: one validator configured as the main process's, the collector off."""
    global _WORKER_VALIDATOR
    gc.disable()  # see raw_writer.collector_paused; each block's garbage is freed by refcount
    _WORKER_VALIDATOR = StructuralValidator(
        config["mode"], config["used"], fast_path=config["fast_path"], max_shapes=config["max_shapes"]
    )


def worker_block(block: bytes, first_line: int, job: BlockJob) -> BlockResult:
    """Prepare one block in a worker process (`worker_init` ran first)."""
    result = prepare_block(block, first_line, job, _WORKER_VALIDATOR if job.validate else None)
    gc.collect(0)  # cycles from rejected resources' exceptions, once per block
    return result
