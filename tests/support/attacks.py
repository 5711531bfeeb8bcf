"""Attacks a BI user could run on the published BI target and on the QI report, as code.

Each attack takes what a BI user sees (`Published`: the BI target's tables, read from its DuckDB file)
and the truth (the same marts built without suppression, min_cell = 1) and returns the small counts it
recovered: a `Leak` is a cell that is hidden (NULL) in what was published, that the attack worked out
from shown cells, and whose true value the attack got right and is a small count (1 .. min_cell - 1).
The truth is only used to confirm a recovery, never to make one.

The attacks solve additive relations (`total = part_1 + ... + part_k`): whenever a relation has one
unknown cell, it follows; recovered cells feed further relations until nothing changes.
- within_row: small counts shown as they are; a hidden numerator from a shown rate and denominator
  (or a hidden denominator from a shown rate and numerator);
- across_rows: practice = sum of clinics per month (qi_monthly), all sessions = sum of session numbers
  (trajectory), total = sum of thirds (adherence), bands = fit episodes, data-quality total = tables;
- across_periods: a therapist's all = sum of years (and year = quarters, quarter = months), the report
  overview's sessions = sum of the practice months;
- across_tables: the therapists of a period add up to the practice months of that period in
  qi_monthly (sessions with alliance, episodes and their outcome counts);
- model_statistics: a hidden therapist's n from its shrinkage weight (n = sigma2 w / (tau2 (1 - w))),
  from its funnel limits (n = (z sigma / (limit - grand))^2), from patients_in_model minus the
  shown therapists, and from the therapist ICC's n (alliance_associations) minus the shown therapists;
- report_text: numbers parsed from the report's HTML: small counts printed, a trajectory total minus
  the session numbers shown, and the overview's attended sessions (its card, and the monthly caption)
  minus the months the monthly table shows.
"""

from __future__ import annotations

import html as html_lib
import itertools
import math
import re
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from marts.build import BI_MARTS
from marts.qi import COUNT_COLUMNS as QI_COUNTS
from marts.qi import QUARTER_RATES, QUARTER_SOURCES
from marts.qi import RATES as QI_RATES
from marts.therapists import ADDITIVE_COLUMNS, PERIOD_ORDER
from marts.therapists import COUNT_COLUMNS as THERAPIST_COUNTS
from marts.therapists import RATES as THERAPIST_RATES
from pipelines.catalog import load_catalog

Row = dict[str, Any]
Cell = tuple[str, tuple[Hashable, ...], str]  # (table, row key, column)
Relation = tuple[Cell, tuple[Cell, ...]]  # total, parts

# Count columns of each BI mart (the attacks' targets).
COUNTS: dict[str, tuple[str, ...]] = {
    "qi_monthly": (*QI_COUNTS, *QUARTER_SOURCES),
    "therapist_alliance": THERAPIST_COUNTS,
    "report_overview": ("patients", "episodes", "sessions", "sessions_alliance_measured"),
    "report_alliance_trajectory": (
        "sessions_patient_rated",
        "sessions_clinician_rated",
        "sessions_change_patient",
        "sessions_change_clinician",
    ),
    "report_early_alliance_fit": ("episodes",),
    "report_early_alliance_bins": ("episodes",),
    "report_adherence_by_alliance_tertile": ("n_patient_periods", "n_patient_periods_total"),
    "report_data_quality": ("quarantined_rows",),
    "alliance_associations": ("n",),
}
RATES: dict[str, dict[str, tuple[str, str]]] = {
    "qi_monthly": {**QI_RATES, **QUARTER_RATES},
    "therapist_alliance": THERAPIST_RATES,
    "report_overview": {"measurement_completion_rate": ("sessions_alliance_measured", "sessions")},
}
# therapist_alliance column -> qi_monthly column counting the same things for the practice
ACROSS_TABLES = {
    "sessions_with_alliance": "sessions_wai_measured",
    "episodes_ended": "episodes_ended",
    "episodes_outcome_complete": "episodes_outcome_complete",
    "episodes_case_complete": "episodes_case_complete",
    "episodes_recovered": "episodes_recovered",
    "episodes_reliably_improved": "episodes_reliably_improved",
}


@dataclass(frozen=True)
class Leak:
    """A small count recovered exactly from what was published."""

    attack: str
    cell: Cell
    value: float
    how: str


class Published:
    """What a BI user sees: every table of the BI target, rows keyed by the mart's declared key."""

    def __init__(self, tables: Mapping[str, list[Row]]) -> None:
        self.tables = dict(tables)
        catalog = load_catalog()
        self.keys = {name: catalog.table(f"marts.{name}").key for name in self.tables if name in BI_MARTS}

    @classmethod
    def read(cls, database: Path) -> Published:
        """The tables of a published BI file (never the warehouse)."""
        con = duckdb.connect()
        try:
            con.execute("ATTACH ? AS bi (READ_ONLY)", [str(database)])
            names = [
                r[0]
                for r in con.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE database_name = 'bi'"
                ).fetchall()
            ]
            tables: dict[str, list[Row]] = {}
            for name in names:
                if name not in BI_MARTS:
                    continue
                cur = con.execute(f'SELECT * FROM bi.main."{name}"')  # names from the file's catalog
                cols = [d[0] for d in cur.description]
                tables[name] = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
            return cls(tables)
        finally:
            con.close()

    def rows(self, table: str) -> list[Row]:
        return self.tables.get(table, [])

    def key(self, table: str, row: Row) -> tuple[Hashable, ...]:
        return tuple(row[k] for k in self.keys[table])

    def value(self, cell: Cell) -> Any:
        table, key, col = cell
        for row in self.rows(table):
            if self.key(table, row) == key:
                return row.get(col)
        return None

    def index(self) -> dict[Cell, Any]:
        """Every cell of every table."""
        out: dict[Cell, Any] = {}
        for table, rows in self.tables.items():
            if table not in self.keys:
                continue
            for row in rows:
                k = self.key(table, row)
                for col, v in row.items():
                    out[(table, k, col)] = v
        return out


def _small(v: float | None, min_cell: int) -> bool:
    return v is not None and 0 < v < min_cell


def _same(a: Any, b: Any) -> bool:
    return a is not None and b is not None and math.isclose(float(a), float(b), abs_tol=1e-6)


def _confirm(
    attack: str,
    recovered: Mapping[Cell, float],
    shown: Mapping[Cell, Any],
    truth: Published,
    min_cell: int,
    how: str,
) -> list[Leak]:
    """Recovered cells that were hidden, are right, and are small counts."""
    truth_index = truth.index()
    leaks: list[Leak] = []
    for cell, v in recovered.items():
        if shown.get(cell) is not None:
            continue
        true = truth_index.get(cell)
        if _same(v, true) and _small(float(true), min_cell):
            leaks.append(Leak(attack, cell, float(true), how))
    return leaks


def solve(known: Mapping[Cell, float | None], relations: Iterable[Relation]) -> dict[Cell, float]:
    """Every cell that follows from `known` through relations with one unknown, repeatedly."""
    values: dict[Cell, float] = {c: float(v) for c, v in known.items() if v is not None}
    rels = list(relations)
    recovered: dict[Cell, float] = {}
    changed = True
    while changed:
        changed = False
        for total, parts in rels:
            cells = [total, *parts]
            unknown = [c for c in cells if c not in values]
            if len(unknown) != 1:
                continue
            u = unknown[0]
            if u == total:
                v = sum(values[p] for p in parts)
            else:
                v = values[total] - sum(values[p] for p in parts if p != u)
            values[u] = v
            recovered[u] = v
            changed = True
    return recovered


def _count_cells(pub: Published) -> dict[Cell, Any]:
    """The count cells of the BI target (None where hidden)."""
    out: dict[Cell, Any] = {}
    for table, cols in COUNTS.items():
        if table not in pub.keys:
            continue
        for row in pub.rows(table):
            k = pub.key(table, row)
            for col in cols:
                if col in row:
                    out[(table, k, col)] = row[col]
    return out


# --- the attacks ---------------------------------------------------------------------------------------


def within_row(pub: Published, truth: Published, min_cell: int) -> list[Leak]:
    """Small counts as published, and hidden counts from a shown rate and its other term."""
    leaks = [
        Leak("within_row", c, float(v), "shown as is")
        for c, v in _count_cells(pub).items()
        if _small(v, min_cell)
    ]
    recovered: dict[Cell, float] = {}
    for table, rates in RATES.items():
        if table not in pub.keys:
            continue
        for row in pub.rows(table):
            k = pub.key(table, row)
            for rate, (num, den) in rates.items():
                r, n, d = row.get(rate), row.get(num), row.get(den)
                if r is None:
                    continue
                if n is None and d is not None:
                    recovered[(table, k, num)] = round(float(r) * float(d), 6)
                if d is None and n is not None and r:
                    recovered[(table, k, den)] = round(float(n) / float(r), 6)
    return leaks + _confirm("within_row", recovered, pub.index(), truth, min_cell, "rate x denominator")


def _rows_relations(pub: Published) -> list[Relation]:
    rels: list[Relation] = []
    qi = pub.rows("qi_monthly")
    by_month: dict[Any, dict[str, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for row in qi:
        by_month[row["month"]][row["level"]].append(row)
    for groups in by_month.values():
        for practice in groups["practice"]:
            for col in QI_COUNTS:
                rels.append(
                    (
                        ("qi_monthly", pub.key("qi_monthly", practice), col),
                        tuple(("qi_monthly", pub.key("qi_monthly", c), col) for c in groups["clinic"]),
                    )
                )
    traj = pub.rows("report_alliance_trajectory")
    for col in COUNTS["report_alliance_trajectory"]:
        for total in (r for r in traj if r["level"] == "all"):
            parts = tuple(
                ("report_alliance_trajectory", pub.key("report_alliance_trajectory", r), col)
                for r in traj
                if r["level"] == "session"
            )
            rels.append(
                (("report_alliance_trajectory", pub.key("report_alliance_trajectory", total), col), parts)
            )
    tert = pub.rows("report_adherence_by_alliance_tertile")
    groups: dict[tuple[Any, Any], list[Row]] = defaultdict(list)
    for row in tert:
        groups[(row["measure"], row["rater"])].append(row)
    t = "report_adherence_by_alliance_tertile"
    for members in groups.values():
        for total_row in members:
            rels.append(
                (
                    (t, pub.key(t, total_row), "n_patient_periods_total"),
                    tuple((t, pub.key(t, r), "n_patient_periods") for r in members),
                )
            )
    fit = pub.rows("report_early_alliance_fit")
    bins = pub.rows("report_early_alliance_bins")
    if fit and bins:
        rels.append(
            (
                ("report_early_alliance_fit", pub.key("report_early_alliance_fit", fit[0]), "episodes"),
                tuple(
                    ("report_early_alliance_bins", pub.key("report_early_alliance_bins", b), "episodes")
                    for b in bins
                ),
            )
        )
    dq = pub.rows("report_data_quality")
    d = "report_data_quality"
    for total in (r for r in dq if r["level"] == "all"):
        rels.append(
            (
                (d, pub.key(d, total), "quarantined_rows"),
                tuple((d, pub.key(d, r), "quarantined_rows") for r in dq if r["level"] == "table"),
            )
        )
    return rels


def _period_relations(pub: Published) -> list[Relation]:
    rels: list[Relation] = []
    t = "therapist_alliance"
    rows = pub.rows(t)
    kinds = [k for k in PERIOD_ORDER if any(r["period_type"] == k for r in rows)]
    for coarse, fine in itertools.pairwise(kinds):
        for outer in (r for r in rows if r["period_type"] == coarse):
            parts = [
                r
                for r in rows
                if r["period_type"] == fine
                and r["therapist_key"] == outer["therapist_key"]
                and outer["period_start"] <= r["period_start"] <= outer["period_end"]
            ]
            for col in ADDITIVE_COLUMNS:
                rels.append(((t, pub.key(t, outer), col), tuple((t, pub.key(t, r), col) for r in parts)))
    overview = pub.rows("report_overview")
    months = [r for r in pub.rows("qi_monthly") if r["level"] == "practice"]
    # a quarter's counts (on its last month's row) = the sum of its practice months
    for q in (m for m in months if m.get("quarter_start") is not None):
        inside = [m for m in months if q["quarter_start"] <= m["month"] <= q["month"]]
        for col, source in QUARTER_SOURCES.items():
            rels.append(
                (
                    ("qi_monthly", pub.key("qi_monthly", q), col),
                    tuple(("qi_monthly", pub.key("qi_monthly", m), source) for m in inside),
                )
            )
    for o in overview:
        for total, col in (
            ("sessions", "sessions_attended"),
            ("sessions_alliance_measured", "sessions_alliance_measured"),
        ):
            rels.append(
                (
                    ("report_overview", pub.key("report_overview", o), total),
                    tuple(("qi_monthly", pub.key("qi_monthly", m), col) for m in months),
                )
            )
    return rels


def _table_relations(pub: Published) -> list[Relation]:
    """The period's therapists = a virtual period total = the period's practice months."""
    rels: list[Relation] = []
    t = "therapist_alliance"
    months = [r for r in pub.rows("qi_monthly") if r["level"] == "practice"]
    periods: dict[tuple[Any, date, date], list[Row]] = defaultdict(list)
    for r in pub.rows(t):
        periods[(r["period_type"], r["period_start"], r["period_end"])].append(r)
    for (kind, start, end), members in periods.items():
        inside = [m for m in months if start <= m["month"] <= end]
        for col, qi_col in ACROSS_TABLES.items():
            virtual: Cell = ("_period_total", (kind, start), col)
            rels.append((virtual, tuple((t, pub.key(t, r), col) for r in members)))
            rels.append((virtual, tuple(("qi_monthly", pub.key("qi_monthly", m), qi_col) for m in inside)))
    return rels


def _solve_attack(
    name: str, relations: list[Relation], pub: Published, truth: Published, min_cell: int
) -> list[Leak]:
    shown = _count_cells(pub)
    recovered = solve(shown, relations)
    return _confirm(name, recovered, shown, truth, min_cell, "additive relation")


def across_rows(pub: Published, truth: Published, min_cell: int) -> list[Leak]:
    """Totals minus shown parts within one table."""
    return _solve_attack("across_rows", _rows_relations(pub), pub, truth, min_cell)


def across_periods(pub: Published, truth: Published, min_cell: int) -> list[Leak]:
    """Periods against their sub-periods (and the overview against the months), with the row relations."""
    return _solve_attack(
        "across_periods", _period_relations(pub) + _rows_relations(pub), pub, truth, min_cell
    )


def across_tables(pub: Published, truth: Published, min_cell: int) -> list[Leak]:
    """therapist_alliance against qi_monthly, with every other relation as well."""
    rels = _table_relations(pub) + _period_relations(pub) + _rows_relations(pub)
    return _solve_attack("across_tables", rels, pub, truth, min_cell)


def model_statistics(pub: Published, truth: Published, min_cell: int) -> list[Leak]:
    """A hidden therapist's n from its weight, its funnel limits, or the model's patient total."""
    t = "therapist_alliance"
    recovered: list[tuple[Cell, float, str]] = []  # every candidate, each route on its own
    periods: dict[tuple[Any, Any], list[Row]] = defaultdict(list)
    for row in pub.rows(t):
        periods[(row["period_type"], row["period_start"])].append(row)
        cell: Cell = (t, pub.key(t, row), "patients_with_alliance")
        w, tau2, sigma2 = row.get("shrinkage_weight"), row.get("tau2"), row.get("sigma2")
        if w is not None and tau2 and sigma2 and 0 < w < 1:
            recovered.append((cell, round(sigma2 * w / (tau2 * (1 - w)), 6), "shrinkage weight"))
        grand, z = row.get("grand_mean"), row.get("funnel_z_outer")
        upper = row.get("funnel_outer_upper")
        if upper is not None and grand is not None and sigma2 and z and upper != grand:
            # the limits are grand + z * sqrt(sigma2 / n + funnel_tau2) (overdispersed, Spiegelhalter
            # 2005): n = sigma2 / (((upper - grand) / z)^2 - funnel_tau2)
            excess = ((upper - grand) / z) ** 2 - float(row.get("funnel_tau2") or 0.0)
            if excess > 0:
                recovered.append((cell, round(sigma2 / excess, 6), "funnel limit"))
    for members in periods.values():
        total = next(
            (r["patients_in_model"] for r in members if r.get("patients_in_model") is not None), None
        )
        if total is None:
            continue
        hidden = [r for r in members if r.get("patients_with_alliance") is None]
        shown = sum(int(r["patients_with_alliance"] or 0) for r in members if r.get("patients_with_alliance"))
        if len(hidden) == 1:
            cell = (t, pub.key(t, hidden[0]), "patients_with_alliance")
            recovered.append((cell, float(total - shown), "patients_in_model minus shown"))
    # the therapist ICC of alliance_associations counts its patients: minus the shown therapists of
    # the 'all' period, one hidden therapist's count would follow
    icc_n = next(
        (r["n"] for r in pub.rows("alliance_associations") if r["question_id"] == "therapist_icc"), None
    )
    everything = [r for r in pub.rows(t) if r["period_type"] == "all"]
    hidden_all = [r for r in everything if r.get("patients_with_alliance") is None]
    if icc_n is not None and len(hidden_all) == 1:
        cell = (t, pub.key(t, hidden_all[0]), "patients_with_alliance")
        shown_all = sum(
            int(r["patients_with_alliance"]) for r in everything if r.get("patients_with_alliance")
        )
        recovered.append((cell, float(icc_n - shown_all), "therapist ICC n minus shown"))
    leaks: list[Leak] = []
    shown_cells = pub.index()
    for cell, v, how in recovered:
        leaks += _confirm("model_statistics", {cell: v}, shown_cells, truth, min_cell, how)
    return leaks


# "n = <count>" of patients, sessions, episodes ... (not of therapists, who are staff, nor of checks)
_N = re.compile(r"\bn\s*=\s*(\d[\d,]*)(?![\d,])(?!\s+(?:therapists|checks)\b)")
# the trajectory's tooltips: the cross-sectional mean or (now drawn) the change since session 1
_SESSION_N = re.compile(r"session (\d+): patient-rated (?:mean|change since session 1) [^(]*\(n = ([^)]*)\)")
_TOTAL_N = re.compile(r"n = (\d[\d,]*) patient-rated sessions")


_CARD = re.compile(r'<div class="value">([^<]*)</div><div class="label">attended sessions</div>')
_MONTHLY_TOTAL = re.compile(r"n = (\d[\d,]*) attended sessions over")
_TABLE = re.compile(r"<table>(.*?)</table>", re.S)
_CELL = re.compile(r"<t[dh][^>]*>(.*?)</t[dh]>", re.S)
_ROW = re.compile(r"<tr>(.*?)</tr>", re.S)


def _table_column(report_html: str, heading: str, first_heading: str) -> list[tuple[str, str]] | None:
    """(row label, cell text) of one column of the report table whose first heading is `first_heading`."""
    for table in _TABLE.findall(report_html):
        rows = [
            [html_lib.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in _CELL.findall(r)]
            for r in _ROW.findall(table)
        ]
        if not rows or not rows[0] or rows[0][0] != first_heading or heading not in rows[0]:
            continue
        i = rows[0].index(heading)
        return [(r[0], r[i]) for r in rows[1:] if len(r) > i]
    return None


def _total_minus_parts(total: int | None, parts: Iterable[str], cell: Cell, min_cell: int) -> list[Leak]:
    """A small remainder of a printed total over the printed parts (hidden parts: a dash, 's' or '<11')."""
    if total is None:
        return []
    remainder = total - sum(_int(p) or 0 for p in parts)
    if _small(remainder, min_cell):
        return [Leak("report_text", cell, float(remainder), "total minus shown")]
    return []


def _int(text: str) -> int | None:
    """A count as the report prints it ('2,086'); None for a dash or '<11'."""
    plain = text.strip().replace(",", "")
    return int(plain) if plain.isdigit() else None


def report_text(report_html: str, truth: Published, min_cell: int) -> list[Leak]:
    """Numbers a reader of the report sees: small n printed, and totals minus the shown parts
    (trajectory sessions; overview and monthly caption sessions against the monthly table)."""
    text = html_lib.unescape(re.sub(r"<[^>]+>", " ", report_html))
    leaks = [
        Leak("report_text", ("report", (), "n"), float(_int(m) or 0), "printed")
        for m in _N.findall(text)
        if _small(_int(m), min_cell)
    ]
    total = _TOTAL_N.search(text)
    parts = _SESSION_N.findall(html_lib.unescape(report_html))
    if total and parts:
        # the session numbers not shown (a dash, '<11', or not drawn at all after the last one) add
        # up to the total minus the shown ones: a small remainder is a small count disclosed
        cell: Cell = ("report_alliance_trajectory", ("hidden session numbers",), "sessions_patient_rated")
        leaks += _total_minus_parts(_int(total.group(1)), (n for _, n in parts), cell, min_cell)
    months = _table_column(report_html, "Sessions", "Month")
    if months:
        # the overview card and the monthly caption print the practice's attended sessions; the
        # monthly table prints them per month: the hidden months add up to the difference
        shown = [v for _, v in months]
        card = _CARD.search(report_html)
        caption = _MONTHLY_TOTAL.search(text)
        for source, found in (("overview card", card), ("monthly caption", caption)):
            if found:
                hidden: Cell = ("qi_monthly", (f"hidden months vs {source}",), "sessions_attended")
                leaks += _total_minus_parts(_int(html_lib.unescape(found.group(1))), shown, hidden, min_cell)
    return leaks


TABLE_ATTACKS: dict[str, Callable[[Published, Published, int], list[Leak]]] = {
    "within_row": within_row,
    "across_rows": across_rows,
    "across_periods": across_periods,
    "across_tables": across_tables,
    "model_statistics": model_statistics,
}


def primary_only(suppressed: Published, truth: Published, min_cell: int) -> Published:
    """A deliberately leaky copy: only small counts hidden (no complements, no linked periods or
    tables), and the model statistics as fitted over every therapist (as before suppression held)."""
    truth_rows = {(t, truth.key(t, r)): r for t in truth.keys for r in truth.rows(t)}
    model = (
        "grand_mean",
        "tau2",
        "sigma2",
        "icc",
        "therapists_in_model",
        "patients_in_model",
        "shrinkage_weight",
        "funnel_inner_lower",
        "funnel_inner_upper",
        "funnel_outer_lower",
        "funnel_outer_upper",
        "mean_alliance",
        "shrunken_alliance",
        "funnel_tau2",
    )
    tables: dict[str, list[Row]] = {}
    for table, rows in suppressed.tables.items():
        out: list[Row] = []
        for row in rows:
            true = truth_rows.get((table, suppressed.key(table, row)))
            if true is None:
                out.append(dict(row))
                continue
            copy = dict(true)
            for col in COUNTS.get(table, ()):
                if col in copy and _small(copy[col], min_cell):
                    copy[col] = None
            for rate, (num, den) in RATES.get(table, {}).items():
                if copy.get(num) is None or copy.get(den) is None:
                    copy[rate] = None
            if table == "therapist_alliance":
                for col in model:
                    copy[col] = true.get(col)
            out.append(copy)
        tables[table] = out
    return Published(tables)
