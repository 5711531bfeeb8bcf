"""Entry point: build the clinical staging layer and the marts in the warehouse connection.

`build_marts(con, settings)` rebuilds everything whole (CREATE OR REPLACE), so a rerun on the same
warehouse gives the same tables. The Dagster assets build one table each through `build_mart` and
`build_staging` with the same context.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import duckdb

from fhir_mappings.registry import Instrument
from marts.adherence import build_adherence
from marts.alliance import build_alliance_sessions
from marts.associations import build_alliance_associations
from marts.outcomes import build_episode_outcomes
from marts.privacy import load_key, register_pseudonym
from marts.qi import build_qi_monthly
from marts.report_marts import (
    build_report_adherence_by_alliance_tertile,
    build_report_alliance_trajectory,
    build_report_data_quality,
    build_report_overview,
    build_sql_mart,
)
from marts.scores import build_session_measures
from marts.settings import MartSettings, Thresholds, load_mart_settings, thresholds_from_registry
from marts.staging import STAGING_TABLES, build_staging_table, prepare
from marts.therapists import build_therapist_alliance

MART_NAMES: tuple[str, ...] = (
    "alliance_sessions",
    "episode_outcomes",
    "adherence",
    "therapist_alliance",
    "qi_monthly",
    "alliance_associations",
    # what the QI report shows (marts/report_marts.py, SQL in marts/sql/)
    "report_overview",
    "report_alliance_trajectory",
    "report_early_alliance_fit",
    "report_therapist_funnel",
    "report_adherence_by_alliance_tertile",
    "report_data_quality",
)
# Marts each mart reads (besides staging).
MART_INPUTS: dict[str, tuple[str, ...]] = {
    "alliance_sessions": (),
    "episode_outcomes": ("alliance_sessions",),
    "adherence": (),
    "therapist_alliance": ("alliance_sessions", "episode_outcomes"),
    "qi_monthly": ("alliance_sessions", "episode_outcomes"),
    "alliance_associations": ("alliance_sessions", "episode_outcomes", "adherence"),
    "report_overview": ("alliance_sessions", "qi_monthly", "therapist_alliance"),
    "report_alliance_trajectory": ("alliance_sessions",),
    "report_early_alliance_fit": ("episode_outcomes",),
    "report_therapist_funnel": ("therapist_alliance",),
    "report_adherence_by_alliance_tertile": ("adherence",),
    # after every other mart, so their blocking checks of the same run are in quality.check_results
    "report_data_quality": tuple(m for m in MART_NAMES if m != "report_data_quality"),
}
# Staging tables built here, in order: the clinical tables, then scores linked to sessions.
STAGING_BUILT: tuple[str, ...] = (*STAGING_TABLES, "session_measures")


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


@contextlib.contextmanager
def single_threaded(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Run DuckDB on one thread inside the block, then restore the setting.

    Why: a parallel aggregate adds floating-point values in a varying order, so an average can
    differ in its last bit between runs (and a rank tie can flip). One thread makes every rebuild
    give identical rows; the marts are small enough that the cost is negligible.
    """
    threads = con.execute("SELECT current_setting('threads')").fetchall()[0][0]
    con.execute("SET threads = 1")
    try:
        yield
    finally:
        con.execute(f"SET threads = {int(threads)}")


def prepare_marts(con: duckdb.DuckDBPyConnection, ctx: MartContext) -> None:
    """Macros, the parameter row, age bands and pseudonyms on this connection; the marts schema."""
    prepare(con, ctx.settings, ctx.thresholds)
    register_pseudonym(con, ctx.key)
    con.execute("CREATE SCHEMA IF NOT EXISTS marts")


def build_staging(
    con: duckdb.DuckDBPyConnection, name: str, ctx: MartContext, *, prepared: bool = False
) -> dict[str, int]:
    """Build one staging table (`STAGING_BUILT`); returns its counts (`rows` plus linking stats).

    `prepared=True` skips installing the macros and parameters (already done on this connection).
    """
    if not prepared:
        prepare(con, ctx.settings, ctx.thresholds)
    with single_threaded(con):
        if name == "session_measures":
            return build_session_measures(con)
        return {"rows": build_staging_table(con, name)}


_BUILDERS: dict[str, Callable[[duckdb.DuckDBPyConnection, MartContext], int]] = {
    "alliance_sessions": lambda con, ctx: build_alliance_sessions(con),
    "episode_outcomes": lambda con, ctx: build_episode_outcomes(con),
    "adherence": lambda con, ctx: build_adherence(con),
    "therapist_alliance": lambda con, ctx: build_therapist_alliance(con, ctx.settings),
    "qi_monthly": lambda con, ctx: build_qi_monthly(con, ctx.settings),
    "alliance_associations": lambda con, ctx: build_alliance_associations(con, ctx.settings),
    "report_overview": lambda con, ctx: build_report_overview(con, ctx.settings),
    "report_alliance_trajectory": lambda con, ctx: build_report_alliance_trajectory(con, ctx.settings),
    "report_early_alliance_fit": lambda con, ctx: build_sql_mart(con, "report_early_alliance_fit"),
    "report_therapist_funnel": lambda con, ctx: build_sql_mart(con, "report_therapist_funnel"),
    "report_adherence_by_alliance_tertile": lambda con, ctx: build_report_adherence_by_alliance_tertile(
        con, ctx.settings
    ),
    "report_data_quality": lambda con, ctx: build_report_data_quality(con, ctx.settings),
}


def build_mart(con: duckdb.DuckDBPyConnection, name: str, ctx: MartContext, *, prepared: bool = False) -> int:
    """(Re)build one mart (its input marts must exist); returns its row count."""
    if name not in _BUILDERS:
        raise KeyError(f"unknown mart {name!r}; known: {', '.join(MART_NAMES)}")
    if not prepared:
        prepare_marts(con, ctx)
    with single_threaded(con):
        return _BUILDERS[name](con, ctx)


def build_marts(
    con: duckdb.DuckDBPyConnection,
    settings: MartSettings | None = None,
    *,
    key: bytes | None = None,
    with_staging: bool = True,
) -> dict[str, int]:
    """Build the clinical staging tables (unless `with_staging=False`) and every mart (`MART_NAMES`).

    Needs the raw layer and `staging.measure_scores`. Returns the row count of each mart. The key
    defaults to `$ALLIANCE_QI_PSEUDONYM_KEY` / `$ALLIANCE_QI_PSEUDONYM_KEY_FILE`.
    """
    ctx = make_context(settings, key)
    prepare_marts(con, ctx)
    if with_staging:
        for name in STAGING_BUILT:
            build_staging(con, name, ctx, prepared=True)
    return {name: build_mart(con, name, ctx, prepared=True) for name in MART_NAMES}
