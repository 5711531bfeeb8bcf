"""What every mart build needs on a connection: settings, thresholds, the pseudonym key, prepared SQL.

`make_context` gathers settings, registry thresholds and the key; `fingerprint_text` is what besides
the input tables changes a mart (for the skip-if-unchanged fingerprint); `prepare_marts` installs
the macros, the parameter row, the status tables and the `pseudonym()` function on a connection;
`MartBuild` is the build function of one mart step (`marts/tables.py`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import duckdb

from fhir_mappings.clinical.params import prepare_clinical
from fhir_mappings.registry import Instrument, load_registry, registry_fingerprint
from marts.adherence import MEDICATION_MAP_FILE
from marts.privacy import load_key, register_pseudonym
from marts.settings import MartSettings, Thresholds, load_mart_settings, thresholds_from_registry
from pipelines.sqlfiles import count_rows
from pipelines.warehouse import single_threaded


@dataclass(frozen=True)
class MartContext:
    """What every builder needs: settings, instrument thresholds and the pseudonym key."""

    settings: MartSettings
    thresholds: Thresholds
    key: bytes = b""

    def __repr__(self) -> str:  # never show the key
        return f"MartContext(settings={self.settings!r}, thresholds={self.thresholds!r})"


def make_context(
    settings: MartSettings | None = None,
    key: bytes | None = None,
    registry: Mapping[str, Instrument] | None = None,
    need_key: bool = True,
) -> MartContext:
    """Settings (default: file/env), registry thresholds and the key (default: from the environment)."""
    s = settings or load_mart_settings()
    k = key if key is not None else (load_key(key_file=s.pseudonym_key_file) if need_key else b"")
    return MartContext(s, thresholds_from_registry(registry), k)


def fingerprint_text(ctx: MartContext) -> str:
    """Mart settings, registry thresholds, the medication mapping, and a keyed MAC of a constant
    (changes with the key, reveals nothing about it): a mart is rebuilt when any of them changes."""
    mac = hmac.new(ctx.key, b"alliance-qi build state", hashlib.sha256).hexdigest() if ctx.key else ""
    # the declared medication mapping shapes the PDC (adherence, qi_monthly) like a setting does
    medications = hashlib.sha256(MEDICATION_MAP_FILE.read_bytes()).hexdigest()
    return f"{ctx.settings!r}|{registry_fingerprint(load_registry())}|{mac}|{medications}"


def prepare_marts(con: duckdb.DuckDBPyConnection, ctx: MartContext) -> None:
    """Macros, the parameter row, age bands and pseudonyms on this connection; the marts schema."""
    prepare_clinical(con, ctx.settings, ctx.thresholds)
    register_pseudonym(con, ctx.key)
    con.execute("CREATE SCHEMA IF NOT EXISTS marts")


@dataclass(frozen=True)
class MartBuild:
    """The build function of one mart step: fill `table`, return `{"rows.<table>": n}`.

    Called as a step's `build(con, ctx)` it prepares the connection first (an asset's fresh
    connection); `build_marts` prepares once and passes `prepared=True` for each mart.
    """

    table: str
    fill: Callable[[duckdb.DuckDBPyConnection, MartContext], object]

    def __call__(
        self, con: duckdb.DuckDBPyConnection, ctx: MartContext, *, prepared: bool = False
    ) -> dict[str, int]:
        if not prepared:
            prepare_marts(con, ctx)
        with single_threaded(con):
            self.fill(con, ctx)
        return {f"rows.{self.table}": count_rows(con, self.table)}
