"""Land an NDJSON file (a folder source's file, a Bulk export's download) block by block.

The per-line work of landing is Python: parse the line, serialise and hash the resource, and run
the structural validator. On two cores that is the whole landing's cost (a million responses took
about five minutes in one process). Here the file is cut into blocks of whole lines; each block is
prepared in a worker process (`prepare_block`: parse, key, hash and, on a first load, validate) and
comes back as compact landing items without the parsed dicts. The main process keeps the only
warehouse connection, queues the items in file order and writes them as before (`RawLander`). So a
file lands with the same rows, rejections, findings and counts whether it is prepared in workers or
in the main process (tests/unit/test_ndjson_landing.py compares both).

Workers are used for files of at least `ALLIANCE_QI_LANDING_PARALLEL_BYTES` (default 16 MiB) when
`ALLIANCE_QI_LANDING_WORKERS` (default: the machine's cores, at most 2) is above 0, and never inside a
daemonic process (a Celery prefork child may not start processes). They are spawned, not forked:
the main process holds DuckDB threads, and a fork copies their locks mid-flight.

Versions the target may hold already (not a first load) are validated in the main process after the
anti-join, as `RawLander.flush` always did: a rerun over a grown file validates only what is new.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from pipelines.ndjson_prepare import (
    LINE_TEXT,
    BlockJob,
    BlockResult,
    LandingItem,
    prepare_block,
    worker_block,
    worker_init,
)
from pipelines.raw_writer import SQL_DIR, RawLander, collector_paused
from pipelines.sqlfiles import query_sql, run_sql
from pipelines.warehouse import LANDING_MEMORY_LIMIT, stage_memory_limit

__all__ = ["land_ndjson", "workers_for"]

BLOCK_BYTES = 4 << 20  # lines per block: ~2,000 responses; small enough to keep a few in flight
CHECKPOINT_THRESHOLD = "256MB"  # see _checkpoint_less_often
BLOCKS_IN_FLIGHT_PER_WORKER = 4  # the main process may be writing a batch while workers go on


def _blocks(path: Path) -> Iterator[tuple[bytes, int]]:
    """`(bytes, number of the first line)` for consecutive blocks of whole lines."""
    number = 1
    with path.open("rb") as f:
        while True:
            block = f.read(BLOCK_BYTES)
            if not block:
                return
            if not block.endswith(b"\n"):
                block += f.readline()  # complete the last line (or the file ends here)
            yield block, number
            number += block.count(b"\n")


def workers_for(path: Path) -> int:
    """How many worker processes landing `path` uses (0: prepare in the main process)."""
    env = os.environ.get("ALLIANCE_QI_LANDING_WORKERS")
    workers = int(env) if env is not None and env.strip() else min(2, os.cpu_count() or 1)
    min_bytes = int(os.environ.get("ALLIANCE_QI_LANDING_PARALLEL_BYTES", str(16 << 20)))
    if workers <= 0 or multiprocessing.current_process().daemon:
        return 0
    try:
        return workers if path.stat().st_size >= min_bytes else 0
    except OSError:
        return 0


def land_ndjson(
    lander: RawLander,
    path: Path,
    origin_prefix: str,
    *,
    only_type: str | None,
    keep_unparseable: bool,
) -> None:
    """Queue every line of the NDJSON file `path` into `lander` (in file order); does not close it."""
    job = BlockJob(origin_prefix, only_type, keep_unparseable, lander.resource_type, lander.is_fresh())
    workers = workers_for(path)
    with (
        collector_paused(),
        stage_memory_limit(lander.con, LANDING_MEMORY_LIMIT),
        _checkpoint_less_often(lander),
    ):
        if workers == 0:
            validator = lander.validator if job.validate else None
            for block, first in _blocks(path):
                _queue_block(lander, block, prepare_block(block, first, job, validator).items)
            return
        _land_in_workers(lander, path, job, workers)


@contextlib.contextmanager
def _checkpoint_less_often(lander: RawLander) -> Iterator[None]:
    """Checkpoint every ~256 MB of landed text instead of after every batch.

    Why: each batch commits ~20 MB, above DuckDB's default WAL threshold (16 MB), so every commit
    also checkpointed: measured, 0.18 s per 10k-response commit against 0.04 s when the checkpoint
    waits. Not until the end of the file: the rows not yet checkpointed stay in DuckDB's memory (a
    million responses held 1.5 GB). The threshold is restored afterwards and a checkpoint taken, so
    the WAL does not outlive the file's landing.
    """
    con = lander.con
    before = query_sql(con, SQL_DIR / "current_checkpoint_threshold.sql")[0][0]
    run_sql(con, SQL_DIR / "checkpoint_threshold.sql", {"threshold": CHECKPOINT_THRESHOLD})
    try:
        yield
        lander.flush()
    finally:
        run_sql(con, SQL_DIR / "checkpoint_threshold.sql", {"threshold": before})
    run_sql(con, SQL_DIR / "checkpoint.sql")


def _land_in_workers(lander: RawLander, path: Path, job: BlockJob, workers: int) -> None:
    v = lander.validator
    config = {
        "mode": v.mode,
        "used": v.used,
        "fast_path": v.fast_path,
        "max_shapes": v.max_shapes,
    }
    context = multiprocessing.get_context("spawn")
    window = BLOCKS_IN_FLIGHT_PER_WORKER * workers  # bounded memory however fast the workers are
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=worker_init, initargs=(config,))
    with pool:
        pending: deque[tuple[bytes, Future[Any]]] = deque()
        try:
            for block, first in _blocks(path):
                pending.append((block, pool.submit(worker_block, block, first, job)))
                if len(pending) >= window:
                    _drain_one(lander, pending)
            while pending:
                _drain_one(lander, pending)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _drain_one(lander: RawLander, pending: deque[tuple[bytes, Future[Any]]]) -> None:
    block, future = pending.popleft()
    result: BlockResult = future.result()
    lander.validator.absorb_stats(result.stats, result.seconds, result.validations)
    _queue_block(lander, block, result.items)


def _queue_block(lander: RawLander, block: bytes, items: list[tuple[int, LandingItem]]) -> None:
    lines: list[bytes] | None = None
    for index, item in items:
        if item.text == LINE_TEXT:
            if lines is None:
                lines = block.split(b"\n")
            item.text = lines[index].rstrip(b"\r\n").decode()
        lander.add_prepared(item)
