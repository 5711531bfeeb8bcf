"""Privacy for published marts: keyed pseudonyms and age bands.

Pseudonyms are HMAC-SHA256 over `kind:source:id` with a secret key, so they are stable across runs
(marts join on them), differ by kind (a patient key never equals an encounter key) and cannot be
reversed or recomputed without the key. The key comes from the environment:

- `ALLIANCE_QI_PSEUDONYM_KEY`: the key itself (at least 16 characters), or
- `ALLIANCE_QI_PSEUDONYM_KEY_FILE`: a file holding it (the demo creates `data/pseudonym.key`, 0600,
  with `ensure_demo_key`).

Small-cell suppression of aggregates lives in `marts.suppression`.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import secrets
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

import duckdb

KEY_ENV = "ALLIANCE_QI_PSEUDONYM_KEY"
KEY_FILE_ENV = "ALLIANCE_QI_PSEUDONYM_KEY_FILE"
MIN_KEY_BYTES = 16
PSEUDONYM_HEX_CHARS = 20  # 80 bits: no collisions among millions of ids


class PseudonymKeyError(RuntimeError):
    """No usable pseudonym key: the message says how to provide one (never the key itself)."""


def _check(key: bytes, where: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise PseudonymKeyError(f"pseudonym key from {where} is shorter than {MIN_KEY_BYTES} bytes")
    return key


def load_key(env: Mapping[str, str] | None = None, key_file: str | Path | None = None) -> bytes:
    """The pseudonym key: `$ALLIANCE_QI_PSEUDONYM_KEY`, else the file named by
    `$ALLIANCE_QI_PSEUDONYM_KEY_FILE`, else `key_file` (mart settings). Raises if none is set."""
    environ = os.environ if env is None else env
    if environ.get(KEY_ENV):
        return _check(environ[KEY_ENV].strip().encode(), KEY_ENV)
    path = environ.get(KEY_FILE_ENV) or (str(key_file) if key_file else None)
    if path:
        try:
            return _check(Path(path).read_bytes().strip(), f"key file {path}")
        except OSError as exc:
            raise PseudonymKeyError(f"cannot read pseudonym key file {path}: {exc.strerror}") from exc
    raise PseudonymKeyError(
        f"no pseudonym key: set {KEY_ENV}, or {KEY_FILE_ENV} to a key file "
        "(the demo creates data/pseudonym.key with marts.privacy.ensure_demo_key)"
    )


def ensure_demo_key(path: str | Path) -> Path:
    """Create a random key file readable by its owner only (0600), unless one exists already.

    Idempotent: an existing file is kept (pseudonyms stay stable across demo runs); its permissions
    are tightened to 0600 if they were wider.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if stat.S_IMODE(p.stat().st_mode) & 0o077:
            p.chmod(0o600)
        return p
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    return p


def pseudonym(key: bytes, kind: str, source: str | None, rid: str | None) -> str | None:
    """Keyed pseudonym of one FHIR id (`kind` e.g. 'patient'); None for a missing id."""
    if rid is None:
        return None
    msg = f"{kind}:{source or ''}:{rid}".encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_CHARS]


def age_band(age: int | None, bands: Sequence[int]) -> str | None:
    """'<18', '18-24', ..., '65+' for lower bounds [18, 25, ..., 65]; None for an unknown age."""
    if age is None:
        return None
    if age < bands[0]:
        return f"<{bands[0]}"
    for lo, hi in itertools.pairwise(bands):
        if lo <= age < hi:
            return f"{lo}-{hi - 1}"
    return f"{bands[-1]}+"


def _replace_function(con: duckdb.DuckDBPyConnection, name: str) -> None:
    try:
        con.remove_function(name)
    except (duckdb.InvalidInputException, duckdb.CatalogException):
        pass  # not registered on this connection yet


def register_age_band(con: duckdb.DuckDBPyConnection, bands: Sequence[int]) -> None:
    """Register the scalar SQL function `age_band(age BIGINT) -> VARCHAR` on `con`."""
    band_list = list(bands)

    def _age_band(age: int) -> str | None:
        return age_band(age, band_list)

    _replace_function(con, "age_band")
    con.create_function("age_band", _age_band, ["BIGINT"], "VARCHAR", side_effects=False)


def register_pseudonym(con: duckdb.DuckDBPyConnection, key: bytes) -> None:
    """Register the scalar SQL function `pseudonym(kind, source, id) -> VARCHAR` on `con`.

    The key stays in this closure; it is never written to the database. NULL in gives NULL out
    (DuckDB's default null handling for Python functions).
    """
    _check(key, "the caller")

    def _pseudonym(kind: str, source: str, rid: str) -> str | None:
        return pseudonym(key, kind, source, rid)

    _replace_function(con, "pseudonym")
    con.create_function(
        "pseudonym", _pseudonym, ["VARCHAR", "VARCHAR", "VARCHAR"], "VARCHAR", side_effects=False
    )


def register_privacy_functions(con: duckdb.DuckDBPyConnection, key: bytes, bands: Sequence[int]) -> None:
    """Register `pseudonym(kind, source, id)` and `age_band(age)` on `con`."""
    register_pseudonym(con, key)
    register_age_band(con, bands)
