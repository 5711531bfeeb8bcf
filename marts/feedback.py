"""Feedback: expected treatment response from the clinic's own closed episodes, and who is not on track.

- **Expected-response curves** (`marts.expected_response`): for PHQ-9, GAD-7 and ORS, empirical
  quantiles of the score at session n given the baseline band, fitted on *closed* episodes (the
  score at each later measured session, sessions past `feedback_max_session` pooled), a cell only
  when it holds at least `feedback_min_cell_n` episodes, each quantile made monotone over sessions
  within a band by weighted isotonic regression (pool adjacent violators): scores are expected to
  improve, never to get worse, as sessions go on (Finch, Lambert & Schaalje 2001 fit the same shape
  with a regression on baseline and log(session)).
- **Not on track** (`marts.not_on_track`): each open episode's latest score against its cell: worse
  than the `not_on_track_quantile` of similar closed episodes is *not on track* (method
  `empirical`). Where the cell is too thin, the rule-based check decides (method `rule_based`):
  a reliable deterioration, or no reliable improvement by session `feedback_horizon_sessions`.
  Without a baseline and a later score: *insufficient data*.
- **Alliance alerts** from `marts.alliance_sessions`: the newest rupture (a reliable drop) is not
  repaired (pending or not repaired), and a low patient-rated alliance in the early sessions.

`feedback_rows` returns the judged open episodes with their FHIR ids, for the write-back
(`pipelines/writeback.py`); the mart holds keyed pseudonyms only. `validate` trains on earlier closed
episodes and tests on later ones (docs/feedback.md).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from marts.context import MartContext
from marts.frames import query_dicts, write_table
from marts.privacy import pseudonym
from marts.settings import MartSettings, Thresholds
from marts.suppression import Relation, suppress

SQL_DIR = Path(__file__).resolve().parent / "sql"
SCORES_SQL = SQL_DIR / "feedback_scores.sql"
EPISODES_SQL = SQL_DIR / "feedback_episodes.sql"
ALLIANCE_SQL = SQL_DIR / "feedback_alliance.sql"

ON_TRACK = "on_track"
NOT_ON_TRACK = "not_on_track"
INSUFFICIENT = "insufficient_data"
EMPIRICAL = "empirical"
RULE_BASED = "rule_based"


@dataclass(frozen=True)
class Outcome:
    """An outcome measure the curves cover: its baseline bands and which direction is worse."""

    instrument: str
    band_lower_bounds: tuple[int, ...]
    higher_is_worse: bool
    reliable_change_field: str

    def band(self, baseline: float) -> str:
        """The baseline band label (`10-14`, `20+`) the score falls in."""
        bounds = self.band_lower_bounds
        for i, lower in enumerate(bounds):
            upper = bounds[i + 1] if i + 1 < len(bounds) else None
            if upper is None or baseline < upper:
                return f"{lower}-{upper - 1}" if upper is not None else f"{lower}+"
        return f"{bounds[-1]}+"

    def reliable_change(self, thresholds: Thresholds) -> float:
        """The registry's reliable-change size of this measure."""
        return float(getattr(thresholds, self.reliable_change_field))

    def improvement(self, baseline: float, score: float) -> float:
        """Points better than baseline (negative: worse)."""
        return baseline - score if self.higher_is_worse else score - baseline


# PHQ-9 and GAD-7 bands are their published severity bands; ORS bands sit below its clinical cut-off
# of 25 in 5-point steps (its reliable change), the rest above it.
OUTCOMES: tuple[Outcome, ...] = (
    Outcome("phq9", (0, 5, 10, 15, 20), True, "phq9_reliable_change"),
    Outcome("gad7", (0, 5, 10, 15), True, "gad7_reliable_change"),
    Outcome("ors", (0, 15, 20, 25), False, "ors_reliable_change"),
)
OUTCOME_BY_ID: dict[str, Outcome] = {o.instrument: o for o in OUTCOMES}


@dataclass(frozen=True)
class Trajectory:
    """One episode's scores on one outcome measure: baseline (session 1..baseline window) and later."""

    source: str
    episode_id: str
    instrument: str
    baseline: float | None
    baseline_session: int | None
    later: tuple[tuple[int, float, str, str], ...]  # (session, score, response_id, session_date)


@dataclass
class Cell:
    """One fitted curve cell: instrument x baseline band x session."""

    instrument: str
    band: str
    session: int
    n: int
    p25: float
    p50: float
    p75: float
    boundary: float


@dataclass
class Curves:
    """Expected-response curves: fitted cells by (instrument, band, session)."""

    cells: dict[tuple[str, str, int], Cell] = field(default_factory=dict)
    max_session: int = 12
    quantile: float = 0.75

    def cell(self, instrument: str, band: str, session: int) -> Cell | None:
        """The cell of a score at `session` (sessions past max_session share the last cell)."""
        return self.cells.get((instrument, band, min(session, self.max_session)))


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile of `values` by linear interpolation between order statistics (type 7)."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def isotonic(values: Sequence[float], weights: Sequence[float], *, increasing: bool) -> list[float]:
    """Weighted isotonic regression (pool adjacent violators): the closest monotone sequence."""
    sign = 1.0 if increasing else -1.0
    blocks: list[list[float]] = []  # [weighted mean, weight, count]
    for v, w in zip(values, weights, strict=True):
        blocks.append([sign * v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    out: list[float] = []
    for m, _, c in blocks:
        out.extend([sign * m] * int(c))
    return out


def trajectories(
    scores: Iterable[Mapping[str, Any]], baseline_window_sessions: int
) -> dict[tuple[str, str, str], Trajectory]:
    """Per (source, episode, instrument): the baseline (first score in the window) and later scores."""
    grouped: dict[tuple[str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in scores:
        grouped[(r["source"], r["episode_id"], r["instrument"])].append(r)
    out: dict[tuple[str, str, str], Trajectory] = {}
    for key, rows in grouped.items():
        rows.sort(key=lambda r: int(r["session_number"]))
        first = rows[0]
        in_window = int(first["session_number"]) <= baseline_window_sessions
        baseline = float(first["score"]) if in_window else None
        base_session = int(first["session_number"]) if in_window else None
        later = tuple(
            (int(r["session_number"]), float(r["score"]), str(r["response_id"]), str(r["session_date"]))
            for r in rows
            if base_session is not None and int(r["session_number"]) > base_session
        )
        out[key] = Trajectory(key[0], key[1], key[2], baseline, base_session, later)
    return out


def fit_curves(train: Iterable[Trajectory], settings: MartSettings) -> Curves:
    """Quantile cells from the trajectories of closed episodes, monotone over sessions per band."""
    q = settings.not_on_track_quantile
    pooled: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for t in train:
        outcome = OUTCOME_BY_ID[t.instrument]
        if t.baseline is None:
            continue
        band = outcome.band(t.baseline)
        seen: set[int] = set()
        for session, score, _, _ in t.later:
            cell_session = min(session, settings.feedback_max_session)
            if cell_session in seen:  # one score per episode per cell: the pooled last cell keeps the first
                continue
            seen.add(cell_session)
            pooled[(t.instrument, band, cell_session)].append(score)
    curves = Curves(max_session=settings.feedback_max_session, quantile=q)
    by_band: dict[tuple[str, str], list[tuple[int, list[float]]]] = defaultdict(list)
    for (instrument, band, session), values in pooled.items():
        if len(values) >= settings.feedback_min_cell_n:
            by_band[(instrument, band)].append((session, values))
    for (instrument, band), cells in by_band.items():
        cells.sort()
        outcome = OUTCOME_BY_ID[instrument]
        # worse than `q` of similar episodes: the upper quantile when higher is worse, else the lower
        worse_q = q if outcome.higher_is_worse else 1 - q
        weights = [float(len(v)) for _, v in cells]
        increasing = not outcome.higher_is_worse  # expected scores improve as sessions go on
        smoothed = {
            name: isotonic([quantile(v, p) for _, v in cells], weights, increasing=increasing)
            for name, p in (("p25", 0.25), ("p50", 0.5), ("p75", 0.75), ("boundary", worse_q))
        }
        for i, (session, values) in enumerate(cells):
            curves.cells[(instrument, band, session)] = Cell(
                instrument,
                band,
                session,
                len(values),
                smoothed["p25"][i],
                smoothed["p50"][i],
                smoothed["p75"][i],
                smoothed["boundary"][i],
            )
    return curves


@dataclass(frozen=True)
class Judgement:
    """One score judged against its expected response."""

    flag: str
    method: str | None
    session: int | None = None
    score: float | None = None
    expected: float | None = None
    boundary: float | None = None
    cell_n: int | None = None
    response_id: str | None = None
    session_date: str | None = None


def judge(
    t: Trajectory | None,
    curves: Curves,
    thresholds: Thresholds,
    settings: MartSettings,
    *,
    up_to_session: int | None = None,
) -> Judgement:
    """The flag of a trajectory's latest later score (at or before `up_to_session` when given)."""
    if t is None or t.baseline is None:
        return Judgement(INSUFFICIENT, None)
    later = [x for x in t.later if up_to_session is None or x[0] <= up_to_session]
    if not later:
        return Judgement(INSUFFICIENT, None)
    session, score, response_id, session_date = later[-1]
    outcome = OUTCOME_BY_ID[t.instrument]
    base = Judgement(INSUFFICIENT, None, session, score, response_id=response_id, session_date=session_date)
    cell = curves.cell(t.instrument, outcome.band(t.baseline), session)
    if cell is not None:
        worse = score > cell.boundary if outcome.higher_is_worse else score < cell.boundary
        return Judgement(
            NOT_ON_TRACK if worse else ON_TRACK,
            EMPIRICAL,
            session,
            score,
            cell.p50,
            cell.boundary,
            cell.n,
            response_id,
            session_date,
        )
    rc = outcome.reliable_change(thresholds)
    gain = outcome.improvement(t.baseline, score)
    # Rule-based fallback: a reliable deterioration at any session, or by the horizon no reliable
    # improvement. Before the horizon a score that has not deteriorated is on track.
    deteriorated = gain <= -rc
    stalled = session >= settings.feedback_horizon_sessions and gain < rc
    flag = NOT_ON_TRACK if deteriorated or stalled else ON_TRACK
    return Judgement(
        flag,
        RULE_BASED,
        base.session,
        base.score,
        response_id=base.response_id,
        session_date=base.session_date,
    )


def _overall(judged: Mapping[str, Judgement]) -> tuple[str, str | None]:
    for wanted in (NOT_ON_TRACK, ON_TRACK):
        hits = [j for j in judged.values() if j.flag == wanted]
        if hits:
            return wanted, ",".join(sorted({j.method for j in hits if j.method}))
    return INSUFFICIENT, None


def _load(
    con: duckdb.DuckDBPyConnection, settings: MartSettings
) -> tuple[list[dict[str, Any]], dict[tuple[str, str, str], Trajectory]]:
    episodes = query_dicts(con, EPISODES_SQL)
    trajs = trajectories(query_dicts(con, SCORES_SQL), settings.baseline_window_sessions)
    return episodes, trajs


def feedback_rows(con: duckdb.DuckDBPyConnection, ctx: MartContext) -> tuple[list[dict[str, Any]], Curves]:
    """Every open episode judged on each outcome measure, with alliance alerts and its FHIR ids.

    The rows carry FHIR ids (source, episode, patient, practitioner): they stay in this process (the
    write-back) and are pseudonymised for the mart. Needs marts.alliance_sessions (the alliance
    alerts) and the pseudonym key of `ctx` (to match its episode keys).
    """
    settings, thresholds = ctx.settings, ctx.thresholds
    episodes, trajs = _load(con, settings)
    closed = {(e["source"], e["episode_id"]) for e in episodes if e["closed"]}
    curves = fit_curves([t for k, t in trajs.items() if k[:2] in closed], settings)
    alliance: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in query_dicts(con, ALLIANCE_SQL):
        alliance[a["episode_key"]].append(a)
    rows: list[dict[str, Any]] = []
    for e in episodes:
        if e["closed"]:
            continue
        source, episode_id = e["source"], e["episode_id"]
        judged = {
            o.instrument: judge(trajs.get((source, episode_id, o.instrument)), curves, thresholds, settings)
            for o in OUTCOMES
        }
        flag, method = _overall(judged)
        episode_key = pseudonym(ctx.key, "episode", source, episode_id)
        sessions = alliance.get(episode_key or "", [])
        ruptures = [s for s in sessions if s["rupture_flag"]]
        newest = ruptures[-1] if ruptures else None
        drop_alert = newest is not None and newest["repair_status"] in ("pending", "not_repaired")
        low_early = [
            s for s in sessions if s["low_alliance_flag"] and s["session_number"] <= settings.early_sessions
        ]
        row: dict[str, Any] = {
            "source": source,
            "episode_id": episode_id,
            "patient_id": e["patient_id"],
            "practitioner_id": e["practitioner_id"],
            "clinic_id": e["clinic_id"],
            "latest_session_number": e["sessions_attended"],
            "latest_session_date": e["last_session_date"],
            "flag": flag,
            "method": method,
            "alliance_drop_alert": drop_alert,
            "alliance_drop_session": newest["session_number"] if drop_alert and newest else None,
            "alliance_drop_date": newest["session_date"] if drop_alert and newest else None,
            "low_early_alliance_alert": bool(low_early),
            "low_early_alliance_session": low_early[0]["session_number"] if low_early else None,
            "low_early_alliance_date": low_early[0]["session_date"] if low_early else None,
        }
        for o in OUTCOMES:
            j = judged[o.instrument]
            t = trajs.get((source, episode_id, o.instrument))
            row.update(
                {
                    f"{o.instrument}_baseline": t.baseline if t else None,
                    f"{o.instrument}_session": j.session,
                    f"{o.instrument}_observed": j.score,
                    f"{o.instrument}_expected": j.expected,
                    f"{o.instrument}_boundary": j.boundary,
                    f"{o.instrument}_cell_n": j.cell_n,
                    f"{o.instrument}_flag": j.flag,
                    f"{o.instrument}_method": j.method,
                    f"{o.instrument}_response_id": j.response_id,
                    f"{o.instrument}_date": j.session_date,
                }
            )
        rows.append(row)
    return rows, curves


# --- marts ---------------------------------------------------------------------------------------

_PER_OUTCOME: tuple[tuple[str, str], ...] = (
    ("baseline", "DOUBLE"),
    ("session", "INTEGER"),
    ("observed", "DOUBLE"),
    ("expected", "DOUBLE"),
    ("boundary", "DOUBLE"),
    ("cell_n", "INTEGER"),
    ("flag", "VARCHAR"),
    ("method", "VARCHAR"),
)
NOT_ON_TRACK_COLUMNS: tuple[tuple[str, str], ...] = (
    ("episode_key", "VARCHAR"),
    ("patient_key", "VARCHAR"),
    ("therapist_key", "VARCHAR"),
    ("clinic_key", "VARCHAR"),
    ("latest_session_number", "INTEGER"),
    ("latest_session_date", "DATE"),
    ("flag", "VARCHAR"),
    ("method", "VARCHAR"),
    *((f"{o.instrument}_{name}", ctype) for o in OUTCOMES for name, ctype in _PER_OUTCOME),
    ("alliance_drop_alert", "BOOLEAN"),
    ("alliance_drop_session", "INTEGER"),
    ("low_early_alliance_alert", "BOOLEAN"),
    ("low_early_alliance_session", "INTEGER"),
    ("not_on_track_quantile", "DOUBLE"),
    ("feedback_horizon_sessions", "INTEGER"),
    ("feedback_min_cell_n", "INTEGER"),
)
EXPECTED_RESPONSE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("instrument", "VARCHAR"),
    ("baseline_band", "VARCHAR"),
    ("session_number", "INTEGER"),
    ("episodes", "INTEGER"),
    ("p25", "DOUBLE"),
    ("p50", "DOUBLE"),
    ("p75", "DOUBLE"),
    ("not_on_track_boundary", "DOUBLE"),
    ("higher_is_worse", "BOOLEAN"),
    ("not_on_track_quantile", "DOUBLE"),
    ("feedback_min_cell_n", "INTEGER"),
    ("sessions_pooled_from", "INTEGER"),
)


def build_not_on_track(con: duckdb.DuckDBPyConnection, ctx: MartContext) -> int:
    """(Re)build marts.not_on_track: one row per open episode (keyed pseudonyms only)."""
    rows, _ = feedback_rows(con, ctx)
    s, key = ctx.settings, ctx.key
    out = [
        {
            **r,
            "episode_key": pseudonym(key, "episode", r["source"], r["episode_id"]),
            "patient_key": pseudonym(key, "patient", r["source"], r["patient_id"]),
            "therapist_key": pseudonym(key, "practitioner", r["source"], r["practitioner_id"]),
            "clinic_key": pseudonym(key, "organization", r["source"], r["clinic_id"]),
            "not_on_track_quantile": s.not_on_track_quantile,
            "feedback_horizon_sessions": s.feedback_horizon_sessions,
            "feedback_min_cell_n": s.feedback_min_cell_n,
        }
        for r in rows
    ]
    out.sort(key=lambda r: str(r["episode_key"]))
    return write_table(con, "marts.not_on_track", NOT_ON_TRACK_COLUMNS, out)


def build_expected_response(con: duckdb.DuckDBPyConnection, ctx: MartContext) -> int:
    """(Re)build marts.expected_response: the fitted curve cells (closed episodes only)."""
    settings = ctx.settings
    episodes, trajs = _load(con, settings)
    closed = {(e["source"], e["episode_id"]) for e in episodes if e["closed"]}
    curves = fit_curves([t for k, t in trajs.items() if k[:2] in closed], settings)
    rows = [
        {
            "instrument": c.instrument,
            "baseline_band": c.band,
            "session_number": c.session,
            "episodes": c.n,
            "p25": c.p25,
            "p50": c.p50,
            "p75": c.p75,
            "not_on_track_boundary": c.boundary,
            "higher_is_worse": OUTCOME_BY_ID[c.instrument].higher_is_worse,
            "not_on_track_quantile": settings.not_on_track_quantile,
            "feedback_min_cell_n": settings.feedback_min_cell_n,
            "sessions_pooled_from": settings.feedback_max_session,
        }
        for c in sorted(curves.cells.values(), key=lambda c: (c.instrument, c.band, c.session))
    ]
    return write_table(con, "marts.expected_response", EXPECTED_RESPONSE_COLUMNS, rows)


REPORT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("level", "VARCHAR"),
    ("open_episodes", "INTEGER"),
    ("not_on_track", "INTEGER"),
    ("on_track", "INTEGER"),
    ("insufficient_data", "INTEGER"),
    ("flagged_empirical", "INTEGER"),
    ("flagged_rule_based", "INTEGER"),
    ("alliance_drop_alerts", "INTEGER"),
    ("low_early_alliance_alerts", "INTEGER"),
    ("suppressed_columns", "VARCHAR"),
    ("not_on_track_quantile", "DOUBLE"),
    ("feedback_horizon_sessions", "INTEGER"),
    ("min_cell", "INTEGER"),
)
REPORT_SQL = SQL_DIR / "report_not_on_track.sql"
Cell_ = tuple[Hashable, str]


def build_report_not_on_track(con: duckdb.DuckDBPyConnection, ctx: MartContext) -> int:
    """(Re)build marts.report_not_on_track: the practice's open episodes by flag, small counts suppressed.

    Relations protected (`marts.suppression`): the three flags partition the open episodes, the two
    methods partition the not-on-track episodes, and each alert count is a part of the open episodes
    with an unshown remainder; a hidden cell is never recoverable by subtraction.
    """
    settings = ctx.settings
    counts = query_dicts(con, REPORT_SQL)
    row = {k: int(v or 0) for k, v in counts[0].items()} if counts else {}
    names = [c for c, _ in REPORT_COLUMNS[1:9]]
    values: dict[Cell_, int | None] = {(0, c): row.get(c, 0) for c in names}
    relations = [
        Relation((0, "open_episodes"), ((0, "not_on_track"), (0, "on_track"), (0, "insufficient_data"))),
        Relation((0, "not_on_track"), ((0, "flagged_empirical"), (0, "flagged_rule_based"))),
        Relation((0, "open_episodes"), ((0, "alliance_drop_alerts"),), hidden_remainder=True),
        Relation((0, "open_episodes"), ((0, "low_early_alliance_alerts"),), hidden_remainder=True),
    ]
    hidden = suppress(values, relations, settings.min_cell).suppressed
    out: dict[str, Any] = {"level": "practice"}
    for c in names:
        out[c] = None if (0, c) in hidden else row.get(c, 0)
    out.update(
        {
            "suppressed_columns": ",".join(c for c in names if (0, c) in hidden) or None,
            "not_on_track_quantile": settings.not_on_track_quantile,
            "feedback_horizon_sessions": settings.feedback_horizon_sessions,
            "min_cell": settings.min_cell,
        }
    )
    return write_table(con, "marts.report_not_on_track", REPORT_COLUMNS, [out])


# --- validation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Validation:
    """Sensitivity and PPV of an early flag for an outcome (counts included, so nothing is hidden)."""

    target: str
    episodes: int
    positives: int
    flagged: int
    true_positives: int

    @property
    def sensitivity(self) -> float | None:
        """Flagged among those with the outcome."""
        return self.true_positives / self.positives if self.positives else None

    @property
    def ppv(self) -> float | None:
        """With the outcome among those flagged."""
        return self.true_positives / self.flagged if self.flagged else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly, with rates rounded to 3 places."""
        return {
            "target": self.target,
            "episodes": self.episodes,
            "positives": self.positives,
            "flagged": self.flagged,
            "true_positives": self.true_positives,
            "sensitivity": None if self.sensitivity is None else round(self.sensitivity, 3),
            "ppv": None if self.ppv is None else round(self.ppv, 3),
        }


# Caseness at baseline, the population whose improvement is judged (NHS Talking Therapies' rule).
_CASENESS: dict[str, tuple[str, bool]] = {
    "phq9": ("phq9_caseness", True),
    "gad7": ("gad7_caseness", True),
    "ors": ("ors_clinical_cutoff", False),
}


def _case(outcome: Outcome, baseline: float, thresholds: Thresholds) -> bool:
    field_name, at_or_above = _CASENESS[outcome.instrument]
    cut = float(getattr(thresholds, field_name))
    return baseline >= cut if at_or_above else baseline < cut


def _score(target: str, pairs: Sequence[tuple[bool, bool]]) -> Validation:
    return Validation(
        target,
        len(pairs),
        sum(1 for _, y in pairs if y),
        sum(1 for f, _ in pairs if f),
        sum(1 for f, y in pairs if f and y),
    )


def validate(
    con: duckdb.DuckDBPyConnection,
    ctx: MartContext,
    *,
    instrument: str = "phq9",
    planted: Mapping[str, bool] | None = None,
) -> dict[str, Any]:
    """Train on the earlier half of closed episodes (by start date), test the early flag on the later half.

    The flag is judged at the latest score at or before `feedback_horizon_sessions` (the score after
    baseline that a session-3/4 review would see); the outcome is *no reliable improvement at the
    end* (baseline minus last score below the reliable change), among episodes that were cases at
    baseline (PHQ-9 >= caseness) and have a score after the flag's. With `planted` (episode id ->
    planted not on track, from the generator's truth) the flag is also scored against that.
    """
    settings, thresholds = ctx.settings, ctx.thresholds
    episodes, trajs = _load(con, settings)
    closed = sorted(
        (e for e in episodes if e["closed"]), key=lambda e: (e["period_start"] or date.min, e["episode_id"])
    )
    half = len(closed) // 2
    train_keys = {(e["source"], e["episode_id"]) for e in closed[:half]}
    test = closed[half:]
    curves = fit_curves([t for k, t in trajs.items() if k[:2] in train_keys], settings)
    outcome = OUTCOME_BY_ID[instrument]
    rc = outcome.reliable_change(thresholds)
    horizon = settings.feedback_horizon_sessions
    pairs_outcome: list[tuple[bool, bool]] = []
    pairs_planted: list[tuple[bool, bool]] = []
    methods: dict[str, int] = defaultdict(int)
    for e in test:
        t = trajs.get((e["source"], e["episode_id"], instrument))
        j = judge(t, curves, thresholds, settings, up_to_session=horizon)
        if t is None or t.baseline is None or j.flag == INSUFFICIENT or not t.later:
            continue
        if not _case(outcome, t.baseline, thresholds):
            continue  # below caseness a reliable improvement is out of reach: not a fair outcome
        final_session, final_score = t.later[-1][0], t.later[-1][1]
        if final_session <= (j.session or 0):
            continue  # no score after the flag: the end is not yet known
        flagged = j.flag == NOT_ON_TRACK
        methods[j.method or "none"] += 1
        pairs_outcome.append((flagged, outcome.improvement(t.baseline, final_score) < rc))
        if planted is not None and e["episode_id"] in planted:
            pairs_planted.append((flagged, bool(planted[e["episode_id"]])))
    result: dict[str, Any] = {
        "instrument": instrument,
        "horizon_sessions": horizon,
        "quantile": settings.not_on_track_quantile,
        "min_cell_n": settings.feedback_min_cell_n,
        "closed_episodes": len(closed),
        "train_episodes": half,
        "test_episodes": len(test),
        "curve_cells": sum(1 for c in curves.cells if c[0] == instrument),
        "judged_by_method": dict(methods),
        "no_reliable_improvement": _score("no reliable improvement at the end", pairs_outcome).as_dict(),
    }
    if planted is not None:
        result["planted"] = _score("planted not on track", pairs_planted).as_dict()
    return result
