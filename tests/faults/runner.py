"""Run the raw pipeline in a process of its own, so the fault suite can SIGKILL it.

    python -m tests.faults.runner BASE_URL WAREHOUSE [--kind bulk --landing DIR] [--types T,...]
        [--batch-size N] [--pause-before-commit TYPE:N --marker FILE]

A bearer token is taken from the environment variable FAULT_RUNNER_TOKEN when it is set.
`--batch-size` makes the lander commit every N resources (production: 2000), so a kill mid-pull
leaves some batches committed. `--pause-before-commit TYPE:N` stops the N-th write of TYPE after
its INSERTs and before its COMMIT, writes `--marker`, and waits there to be killed: a kill in the
middle of a load transaction. Exit status 0 when the run succeeded, 1 when it failed.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import duckdb

import pipelines.extract
from pipelines.raw_writer import RawLander
from pipelines.settings import RESOURCE_TYPES
from tests.faults import support

log = logging.getLogger("alliance_qi.fault_runner")

#: Environment variable holding a bearer token for the run (sent as `Authorization: Bearer ...`).
RUNNER_TOKEN_ENV = "FAULT_RUNNER_TOKEN"


class _PauseAtCommit:
    """Wraps a DuckDB connection; its first COMMIT writes the marker and then blocks forever."""

    def __init__(self, con: duckdb.DuckDBPyConnection, marker: Path) -> None:
        self._con = con
        self._marker = marker

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        """Delegate, except that COMMIT announces itself and never happens."""
        # Statements also arrive as parsed objects (pipelines.sqlfiles.run_sql): only a text COMMIT pauses.
        if isinstance(query, str) and query.strip().upper() == "COMMIT":
            self._marker.write_text("paused before COMMIT\n")
            log.info("paused before COMMIT; waiting to be killed")
            while True:
                time.sleep(1)
        return self._con.execute(query, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def _pause_before_commit(resource_type: str, nth: int, marker: Path) -> None:
    original = RawLander._write
    calls = {"n": 0}

    def write(self: RawLander, *batch: Any) -> None:
        if self.resource_type == resource_type:
            calls["n"] += 1
            if calls["n"] == nth:
                self.con = _PauseAtCommit(self.con, marker)  # type: ignore[assignment]
        original(self, *batch)

    RawLander._write = write  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, install the requested hooks, run the raw assets once."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("base_url")
    parser.add_argument("warehouse", type=Path)
    parser.add_argument("--kind", default="rest", choices=["rest", "bulk"])
    parser.add_argument("--landing", default="")
    parser.add_argument("--types", default=",".join(RESOURCE_TYPES))
    parser.add_argument("--batch-size", type=int, default=0)
    parser.add_argument("--pause-before-commit", default="")
    parser.add_argument("--marker", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")

    if args.batch_size:
        pipelines.extract.RawLander = functools.partial(  # type: ignore[misc,assignment]
            RawLander, batch_size=args.batch_size
        )
    if args.pause_before_commit:
        resource_type, _, nth = args.pause_before_commit.partition(":")
        _pause_before_commit(resource_type, int(nth or 1), args.marker)
    overrides: dict[str, Any] = {"kind": args.kind}
    token = os.environ.get(RUNNER_TOKEN_ENV)
    if token:  # from the environment, never the command line (process listings show argv)
        overrides.update(auth_mode="bearer", token=token)
    if args.landing:
        overrides["landing_dir"] = args.landing
    result = support.run_raw(
        support.source(args.base_url, **overrides), args.warehouse, tuple(args.types.split(","))
    )
    log.info("run %s: %s", result.run_id, "success" if result.success else "FAILED")
    return 0 if result.success else 1


if __name__ == "__main__":
    raise SystemExit(main())
