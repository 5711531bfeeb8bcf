"""Where every table lives: one declaration per table, one per build step.

A `TableSpec` says what a table is (name, grain "One row per ...", key columns, the SQL file that
builds it). A `StepSpec` says how tables are built: the tables it writes, the tables it reads, and the
function that builds them (most steps just run their SQL files). `assets/` generates the Dagster assets
from these declarations, `pipelines/build_state.py` skips a step whose inputs are unchanged, and
`tests/unit/test_catalog.py` checks each SQL file's `schema.table` references against the declared
inputs, so lineage cannot drift from the SQL.

Declarations live with the package that owns the tables: `pipelines/raw_tables.py` (raw),
`fhir_mappings/tables.py` (staging and scoring), `quality_checks/tables.py` (quality),
`marts/tables.py` (marts). This module knows none of them until `load_catalog()` is called.
Nothing here imports Dagster.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb

Layer = Literal["raw", "staging", "quality", "marts", "published"]
# Where a mart is published: "bi" (aggregates, `data/published/`, what BI users read) or "restricted"
# (record-level: patient, episode or session grain; `data/restricted/`, record-level access only).
PublishTarget = Literal["bi", "restricted"]
LAYERS: tuple[Layer, ...] = ("raw", "staging", "quality", "marts", "published")

# Builds a step's tables on an open warehouse connection; returns counts for the run's metadata
# (at least one `rows.<schema.table>` entry per table it writes).
BuildFn = Callable[[duckdb.DuckDBPyConnection, Any], Mapping[str, int]]

_TABLE_NAME = re.compile(r"^(raw|staging|quality|marts|ops|published)\.[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class TableSpec:
    """One table (or view) the pipeline writes."""

    name: str  # schema.table
    grain: str  # "One row per ..."
    key: tuple[str, ...] = ()  # columns that identify a row (empty for append-only ledgers)
    description: str = ""  # what else a reader needs to know
    sql: Path | None = None  # the file whose SQL builds it, if any
    # marts only: the publish target ("bi" for aggregates, "restricted" for record-level grains);
    # `marts.build` refuses a mart without one, so a new mart cannot reach BI users by default.
    published_to: PublishTarget | None = None

    def __post_init__(self) -> None:
        if not _TABLE_NAME.match(self.name):
            raise ValueError(f"table name {self.name!r} is not schema.table in a known schema")
        if not self.grain.startswith("One row per"):
            raise ValueError(f"{self.name}: grain must read 'One row per ...', got {self.grain!r}")
        if self.published_to is not None and self.schema != "marts":
            raise ValueError(f"{self.name}: only marts are published (published_to={self.published_to!r})")

    @property
    def schema(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def short_name(self) -> str:
        return self.name.split(".", 1)[1]


@dataclass(frozen=True)
class StepSpec:
    """One build step: the tables it writes, what it reads, and how it builds them.

    `inputs` are tables read in full; `optional_inputs` are read only when they exist (e.g. the
    quality layer's quarantine on a first run). Both feed the skip-if-unchanged fingerprint and the
    asset dependencies. `context` prepares what `build` and `fingerprint_text` need (settings, the
    instrument registry, the pseudonym key); `fingerprint_text` adds anything besides the inputs that
    changes the output (settings, registry, key).
    """

    name: str
    layer: Layer
    tables: tuple[TableSpec, ...]
    inputs: tuple[str, ...]
    build: BuildFn
    context: Callable[[], Any] = lambda: None
    fingerprint_text: Callable[[Any], str] = lambda ctx: ""
    optional_inputs: tuple[str, ...] = ()
    description: str = ""
    sql_files: tuple[Path, ...] = field(default=())
    # Extra run metadata read after the step ran or was kept (e.g. what the registry held, totals by
    # instrument): shown in the UI on every table of the step.
    report: Callable[[duckdb.DuckDBPyConnection, Any], Mapping[str, object]] | None = None
    # Assets this step must run after without reading them (ordering only: e.g. the data-quality
    # mart after every other mart, so their blocking checks of the same run are in check_results).
    # Asset dependencies, but neither inputs nor part of the fingerprint.
    after: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.tables:
            raise ValueError(f"step {self.name} writes no table")
        for t in self.tables:
            if t.schema != self.layer and not (self.layer == "staging" and t.schema == "staging"):
                raise ValueError(f"step {self.name} ({self.layer}) writes {t.name} of another layer")

    @property
    def table_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tables)

    @property
    def all_inputs(self) -> tuple[str, ...]:
        return (*self.inputs, *self.optional_inputs)

    @property
    def files(self) -> tuple[Path, ...]:
        """Every SQL file this step runs (the step's own and its tables') and ViewDefinition it compiles."""
        own = list(self.sql_files)
        own += [t.sql for t in self.tables if t.sql is not None and t.sql not in own]
        return tuple(own)


@dataclass(frozen=True)
class Catalog:
    """All declared tables and steps, with lookups and consistency checks."""

    tables: tuple[TableSpec, ...]  # tables written outside steps (raw pulls, quality checks)
    steps: tuple[StepSpec, ...]
    writers: Mapping[str, str] = field(default_factory=dict)  # table -> what writes it, for tables

    def __post_init__(self) -> None:
        names = [t.name for t in self.all_tables()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tables declared more than once: {dupes}")
        known = set(names)
        for step in self.steps:
            unknown = [i for i in (*step.all_inputs, *step.after) if i not in known]
            if unknown:
                raise ValueError(f"step {step.name} reads undeclared tables {unknown}")

    def all_tables(self) -> list[TableSpec]:
        return [*self.tables, *(t for s in self.steps for t in s.tables)]

    def table(self, name: str) -> TableSpec:
        for t in self.all_tables():
            if t.name == name:
                return t
        raise KeyError(f"no table {name!r} is declared")

    def step(self, name: str) -> StepSpec:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"no step {name!r} is declared")

    def step_of(self, table: str) -> StepSpec | None:
        """The step that builds `table`, or None (raw and quality tables are written elsewhere)."""
        for s in self.steps:
            if table in s.table_names:
                return s
        return None

    def steps_in(self, layer: Layer) -> list[StepSpec]:
        return [s for s in self.steps if s.layer == layer]

    def ordered_steps(self, names: Iterable[str] | None = None) -> list[StepSpec]:
        """Steps in dependency order (inputs first), optionally only `names`."""
        wanted = set(names) if names is not None else {s.name for s in self.steps}
        done: set[str] = set()
        out: list[StepSpec] = []

        def visit(step: StepSpec, path: tuple[str, ...]) -> None:
            if step.name in done:
                return
            if step.name in path:
                raise ValueError(f"cycle among steps: {' -> '.join((*path, step.name))}")
            for i in (*step.all_inputs, *step.after):
                up = self.step_of(i)
                if up is not None and up.name != step.name:
                    visit(up, (*path, step.name))
            done.add(step.name)
            out.append(step)

        for s in self.steps:
            visit(s, ())
        return [s for s in out if s.name in wanted]


LAYER_MODULES = (
    "pipelines.raw_tables",
    "fhir_mappings.tables",
    "fhir_mappings.clinical.tables",
    "fhir_mappings.views.tables",  # the site's ViewDefinition files (ALLIANCE_QI_VIEWS_DIR)
    "quality_checks.tables",
    "marts.tables",
)


@functools.cache
def load_catalog() -> Catalog:
    """The project's catalog: every layer module's `TABLES` (written outside steps) and `STEPS`."""
    tables: list[TableSpec] = []
    steps: list[StepSpec] = []
    writers: dict[str, str] = {}
    for module_name in LAYER_MODULES:
        module = importlib.import_module(module_name)
        tables += list(getattr(module, "TABLES", ()))
        steps += list(getattr(module, "STEPS", ()))
        writers.update(getattr(module, "WRITERS", {}))
    return Catalog(tuple(tables), tuple(steps), writers)
