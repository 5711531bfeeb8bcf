"""Small-cell suppression with complementary suppression (CMS cell-size policy) for aggregate marts.

Primary: every count from 1 to `min_cell - 1` (1-10 by default) is suppressed. Complementary: a
suppressed cell must not be recoverable by subtraction, so every additive relation
`total = part_1 + ... + part_k (+ a hidden remainder)` must hold either no unknown cell or at least
two. An unknown is a suppressed cell, or the relation's hidden remainder (a count the table does not
show but that follows from it, e.g. sessions *not* measured = attended - measured). A hidden remainder
that is itself a small count (1..min_cell-1) must be protected like a primary cell; a large one may
be the single unknown. When a relation has exactly one unknown that needs protection, the smallest
displayed non-zero part is suppressed as well (else the total, else a zero part; a relation may
prefer its total, when the part is the figure readers need), and the rules are
applied again until nothing changes (a complement in one relation can expose a cell in another).

Rates are shown only when both their numerator and denominator are shown; means only when the count
they average over is not a small cell.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from marts.settings import MIN_CELL

Cell = tuple[Hashable, str]  # (row key, column name)


@dataclass(frozen=True)
class Relation:
    """`total` = sum of `parts`, plus a remainder the table does not show when `hidden_remainder`."""

    total: Cell
    parts: tuple[Cell, ...]
    hidden_remainder: bool = False
    # Complement the total before a part: for a row relation whose part is the figure readers need
    # (a therapist's patients with an alliance score, the funnel's n) and whose total is not.
    prefer_total: bool = False


@dataclass
class SuppressionResult:
    """Cells to blank, split by reason."""

    primary: set[Cell] = field(default_factory=set)
    complementary: set[Cell] = field(default_factory=set)

    @property
    def suppressed(self) -> set[Cell]:
        return self.primary | self.complementary


def is_small(value: float | int | None, min_cell: int) -> bool:
    """A count from 1 to min_cell - 1."""
    return value is not None and 0 < value < min_cell


def suppress(
    values: Mapping[Cell, int | None],
    relations: Sequence[Relation],
    min_cell: int = MIN_CELL,
    *,
    force: Iterable[Cell] = (),
    fixed: Iterable[Cell] = (),
) -> SuppressionResult:
    """Which count cells to suppress: small cells, then complements until no relation exposes one.

    `values` holds every count cell that will be displayed (None = no value). `force` are cells
    blanked for another reason (e.g. the whole row of a small caseload): primary, whatever their
    value. `fixed` are cells a reader knows from elsewhere and that cannot be blanked here (e.g. a
    practice total another table publishes): never chosen as a complement. Deterministic: ties
    between complement candidates break on the cell's row and column.
    """
    result = SuppressionResult(primary={c for c, v in values.items() if is_small(v, min_cell)})
    result.primary |= {c for c in force if c in values}
    pinned = set(fixed)

    def value(c: Cell) -> int:
        return int(values.get(c) or 0)

    changed = True
    while changed:
        changed = False
        for rel in relations:
            cells = [rel.total, *rel.parts]
            if any(c not in values for c in cells):
                continue  # a relation over cells that are not displayed constrains nothing
            suppressed = result.suppressed
            unknown = [c for c in cells if c in suppressed]
            n_unknown = len(unknown) + (1 if rel.hidden_remainder else 0)
            if n_unknown != 1:
                continue
            if rel.hidden_remainder:
                remainder = value(rel.total) - sum(value(p) for p in rel.parts)
                if not is_small(remainder, min_cell):
                    continue  # the only unknown is a large (or zero) remainder: nothing to protect
            shown = [c for c in rel.parts if c not in suppressed and c not in pinned]
            nonzero = sorted((c for c in shown if value(c) > 0), key=lambda c: (value(c), str(c)))
            zero = sorted((c for c in shown if value(c) == 0), key=str)
            total = [rel.total] if rel.total not in suppressed and rel.total not in pinned else []
            candidates = [*total, *nonzero, *zero] if rel.prefer_total else [*nonzero, *total, *zero]
            if candidates:
                result.complementary.add(candidates[0])
                changed = True
    return result


def apply_rates(
    suppressed: set[Cell], rates: Mapping[str, tuple[str, str]], rows: Iterable[Hashable]
) -> set[Cell]:
    """Rate cells to blank: those whose numerator or denominator cell is suppressed."""
    out: set[Cell] = set()
    for row in rows:
        for rate, (num, den) in rates.items():
            if (row, num) in suppressed or (row, den) in suppressed:
                out.add((row, rate))
    return out
