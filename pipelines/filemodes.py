"""File permissions of what the pipeline writes (docs/operations.md, "File permissions").

- Private (owner only): the warehouse and its write-ahead log, the landing files, Bulk downloads and
  the restricted publish target hold record-level data: files 0600, folders 0700.
- Shared with the BI group: the BI publish target (aggregate marts only): files 0640, folders 0750,
  so a BI service account in the owner's group reads it and nobody else does.

DuckDB creates its `.wal` file lazily, on the first write, with the process umask. `private_umask()`
sets the umask to 0077 while a private file is open, so anything created meanwhile (the `.wal`, a
spill file) is owner-only from its first byte; `restrict()` then fixes files that already existed
with wider modes (created before this rule, or by another tool).
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
SHARED_FILE = 0o640
SHARED_DIR = 0o750
PRIVATE_UMASK = 0o077

_lock = threading.Lock()
_depth = 0
_saved_umask = 0


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Create files owner-only inside the block (umask 0077), then restore the previous umask.

    The umask is per process: nested and concurrent blocks share one counter, so the umask is restored
    only when the last block ends (a block never widens it while another is open).
    """
    global _depth, _saved_umask
    with _lock:
        if _depth == 0:
            _saved_umask = os.umask(PRIVATE_UMASK)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                os.umask(_saved_umask)


def restrict(path: str | Path, mode: int) -> None:
    """Set `path`'s permission bits to `mode` when it exists and they differ (files we own only)."""
    p = Path(path)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_IMODE(p.stat().st_mode) != mode:
            p.chmod(mode)


def restrict_duckdb(path: str | Path, mode: int = PRIVATE_FILE) -> None:
    """`restrict` a DuckDB file and its write-ahead log (`<file>.wal`), when present."""
    p = Path(path)
    restrict(p, mode)
    restrict(p.with_name(p.name + ".wal"), mode)


def make_dir(path: str | Path, mode: int) -> Path:
    """Create a folder (and missing parents) and give the folder itself `mode`."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    restrict(p, mode)
    return p
