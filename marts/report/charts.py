"""Inline SVG charts drawn in Python: no JavaScript and no network needed to show them.

Every chart is one `<svg class="chart" data-chart="<id>">` with a `<title>`, axes, and its data marks
(`<circle>`, `<path>`, `<rect>`) carrying the class `mark`, each with a `<title>` that browsers show
as a tooltip. The size is set by `viewBox`, so charts scale with the page and print.

Colours are the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

from markupsafe import Markup

BLUE = "#0072B2"  # patient-rated
ORANGE = "#E69F00"  # clinician-rated
VERMILLION = "#D55E00"
GREEN = "#009E73"
SKY = "#56B4E9"
PURPLE = "#CC79A7"
GREY = "#6b6b6b"
LIGHT = "#e6e6e6"

WIDTH = 720
HEIGHT = 320
MARGIN_LEFT = 62
MARGIN_RIGHT = 18
MARGIN_TOP = 34
MARGIN_BOTTOM = 52


def _a(value: object) -> str:
    """An attribute value, escaped."""
    return escape(str(value), quote=True)


def _n(value: float) -> str:
    """A coordinate with two decimals (compact, stable output)."""
    return f"{value:.2f}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [lo, hi] (1, 2, 2.5, 5 x 10^k steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks: list[float] = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def padded_range(
    values: Sequence[float], pad: float = 0.08, floor: float | None = None
) -> tuple[float, float]:
    """The data range widened by `pad` of its span on each side (at least +-0.5 around one value)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return (0.0, 1.0)
    lo, hi = min(finite), max(finite)
    span = hi - lo or 1.0
    lo, hi = lo - pad * span, hi + pad * span
    if floor is not None:
        lo = max(lo, floor)
    return lo, hi


@dataclass(frozen=True)
class Scale:
    """Linear map from the domain [d0, d1] to the range [r0, r1]."""

    d0: float
    d1: float
    r0: float
    r1: float

    def __call__(self, value: float) -> float:
        span = self.d1 - self.d0 or 1.0
        return self.r0 + (value - self.d0) / span * (self.r1 - self.r0)


@dataclass
class _Canvas:
    """One chart: plot area, scales, and the SVG parts collected in drawing order."""

    chart_id: str
    title: str
    x: Scale
    y: Scale
    width: int = WIDTH
    height: int = HEIGHT
    parts: list[str] = field(default_factory=list)
    marks: int = 0

    @property
    def left(self) -> float:
        return MARGIN_LEFT

    @property
    def right(self) -> float:
        return self.width - MARGIN_RIGHT

    @property
    def top(self) -> float:
        return MARGIN_TOP

    @property
    def bottom(self) -> float:
        return self.height - MARGIN_BOTTOM

    def add(self, svg: str, mark: bool = False) -> None:
        self.parts.append(svg)
        self.marks += int(mark)

    def axes(
        self,
        x_ticks: Sequence[tuple[float, str]],
        y_ticks: Sequence[tuple[float, str]],
        x_label: str,
        y_label: str,
    ) -> None:
        """Grid lines, tick labels and axis titles."""
        for value, label in y_ticks:
            y = self.y(value)
            self.add(
                f'<line class="grid" x1="{_n(self.left)}" x2="{_n(self.right)}" y1="{_n(y)}" y2="{_n(y)}" '
                f'stroke="{LIGHT}"/>'
            )
            self.add(
                f'<text class="tick" x="{_n(self.left - 6)}" y="{_n(y + 4)}" text-anchor="end">'
                f"{escape(label)}</text>"
            )
        for value, label in x_ticks:
            x = self.x(value)
            self.add(
                f'<line class="tickmark" x1="{_n(x)}" x2="{_n(x)}" y1="{_n(self.bottom)}" '
                f'y2="{_n(self.bottom + 4)}" stroke="{GREY}"/>'
            )
            self.add(
                f'<text class="tick" x="{_n(x)}" y="{_n(self.bottom + 17)}" text-anchor="middle">'
                f"{escape(label)}</text>"
            )
        self.add(
            f'<line class="axis" x1="{_n(self.left)}" x2="{_n(self.right)}" y1="{_n(self.bottom)}" '
            f'y2="{_n(self.bottom)}" stroke="{GREY}"/>'
        )
        self.add(
            f'<text class="axis-label" x="{_n((self.left + self.right) / 2)}" y="{_n(self.height - 12)}" '
            f'text-anchor="middle">{escape(x_label)}</text>'
        )
        cy = (self.top + self.bottom) / 2
        self.add(
            f'<text class="axis-label" x="14" y="{_n(cy)}" text-anchor="middle" '
            f'transform="rotate(-90 14 {_n(cy)})">{escape(y_label)}</text>'
        )

    def legend(self, items: Sequence[tuple[str, str, str]]) -> None:
        """Legend entries (label, colour, kind: line|dashed|dot|box) along the top."""
        x = self.left
        for label, color, kind in items:
            if kind in ("line", "dashed"):
                dash = ' stroke-dasharray="5 4"' if kind == "dashed" else ""
                self.add(
                    f'<line class="legend-key" x1="{_n(x)}" x2="{_n(x + 18)}" y1="14" y2="14" '
                    f'stroke="{color}" stroke-width="2.5"{dash}/>'
                )
            elif kind == "dot":
                self.add(f'<circle class="legend-key" cx="{_n(x + 9)}" cy="14" r="4.5" fill="{color}"/>')
            else:
                self.add(
                    f'<rect class="legend-key" x="{_n(x + 3)}" y="8" width="12" height="12" fill="{color}"/>'
                )
            self.add(f'<text class="legend" x="{_n(x + 23)}" y="18">{escape(label)}</text>')
            x += 30 + 6.6 * len(label)

    def note(self, text: str) -> None:
        """A note in the middle of the plot area (e.g. nothing to show)."""
        self.add(
            f'<text class="empty" x="{_n((self.left + self.right) / 2)}" '
            f'y="{_n((self.top + self.bottom) / 2)}" text-anchor="middle">{escape(text)}</text>'
        )

    def svg(self, description: str) -> Markup:
        """The chart as markup: every text in it was escaped where it was added (`escape`, `_a`)."""
        body = "\n".join(self.parts)
        # Markup only here, once every text of the chart has gone through `escape`/`_a` where it was
        # added (tests feed `<`, `&` and quotes through titles, labels and notes)
        return Markup(  # noqa: S704
            f'<svg class="chart" data-chart="{_a(self.chart_id)}" data-marks="{self.marks}" '
            f'viewBox="0 0 {self.width} {self.height}" role="img" '
            f'aria-labelledby="{_a(self.chart_id)}-title" '
            f'xmlns="http://www.w3.org/2000/svg">\n'
            f'<title id="{_a(self.chart_id)}-title">{escape(self.title)}</title>\n'
            f"<desc>{escape(description)}</desc>\n{body}\n</svg>"
        )


def _y_ticks(lo: float, hi: float, fmt: Callable[[float], str]) -> list[tuple[float, str]]:
    return [(t, fmt(t)) for t in nice_ticks(lo, hi) if lo - 1e-9 <= t <= hi + 1e-9]


def _plain(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class Series:
    """One line of a line chart: points (x, y); y None leaves a gap. `notes` are per-point tooltips;
    `band` an optional interval (x, low, high) drawn as a shaded area."""

    name: str
    points: Sequence[tuple[float, float | None]]
    color: str
    dashed: bool = False
    notes: Sequence[str] = ()
    band: Sequence[tuple[float, float, float]] = ()


def _segments(canvas: _Canvas, points: Sequence[tuple[float, float | None]]) -> list[str]:
    """SVG path data of the runs of consecutive non-missing points."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None or not math.isfinite(y):
            runs.append([])
        else:
            runs[-1].append((canvas.x(x), canvas.y(y)))
    return ["M" + " L".join(f"{_n(px)} {_n(py)}" for px, py in run) for run in runs if len(run) >= 2]


def line_chart(
    chart_id: str,
    title: str,
    series: Sequence[Series],
    *,
    x_label: str,
    y_label: str,
    x_ticks: Sequence[tuple[float, str]] | None = None,
    y_range: tuple[float, float] | None = None,
    y_format: Callable[[float], str] = _plain,
    references: Sequence[tuple[float, str]] = (),
    description: str = "",
) -> Markup:
    """Lines with a dot at every point; optional shaded bands and dashed horizontal references."""
    xs = [x for s in series for x, y in s.points if y is not None]
    ys = [y for s in series for _, y in s.points if y is not None]
    ys += [v for s in series for _, lo, hi in s.band for v in (lo, hi)]
    ys += [v for v, _ in references]
    lo, hi = y_range or padded_range(ys)
    x_lo, x_hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    pad = (x_hi - x_lo) * 0.03
    canvas = _Canvas(
        chart_id,
        title,
        Scale(x_lo - pad, x_hi + pad, MARGIN_LEFT, WIDTH - MARGIN_RIGHT),
        Scale(lo, hi, HEIGHT - MARGIN_BOTTOM, MARGIN_TOP),
    )
    ticks = x_ticks if x_ticks is not None else [(t, _plain(t)) for t in nice_ticks(x_lo, x_hi)]
    canvas.axes(
        [t for t in ticks if x_lo - pad <= t[0] <= x_hi + pad], _y_ticks(lo, hi, y_format), x_label, y_label
    )
    for value, label in references:
        y = canvas.y(value)
        canvas.add(
            f'<line class="reference" x1="{_n(canvas.left)}" x2="{_n(canvas.right)}" y1="{_n(y)}" '
            f'y2="{_n(y)}" stroke="{VERMILLION}" stroke-dasharray="3 3"/>'
        )
        canvas.add(
            f'<text class="ref-label" x="{_n(canvas.right - 4)}" y="{_n(y - 4)}" text-anchor="end">'
            f"{escape(label)}</text>"
        )
    for s in series:
        if len(s.band) >= 2:
            upper = " L".join(f"{_n(canvas.x(x))} {_n(canvas.y(h))}" for x, _, h in s.band)
            lower = " L".join(f"{_n(canvas.x(x))} {_n(canvas.y(lw))}" for x, lw, _ in reversed(s.band))
            canvas.add(
                f'<path class="mark band" d="M{upper} L{lower} Z" fill="{s.color}" fill-opacity="0.15" '
                f'stroke="none"><title>{escape(s.name)}: 95% interval</title></path>',
                mark=True,
            )
    for s in series:
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        for d in _segments(canvas, s.points):
            canvas.add(
                f'<path class="mark line" d="{d}" fill="none" stroke="{s.color}" stroke-width="2.2"{dash}>'
                f"<title>{escape(s.name)}</title></path>",
                mark=True,
            )
        for i, (px, py) in enumerate(s.points):
            if py is None or not math.isfinite(py):
                continue
            note = s.notes[i] if i < len(s.notes) else f"{s.name}: {y_format(py)}"
            canvas.add(
                f'<circle class="mark point" cx="{_n(canvas.x(px))}" cy="{_n(canvas.y(py))}" r="3.2" '
                f'fill="{s.color}"><title>{escape(note)}</title></circle>',
                mark=True,
            )
    canvas.legend([(s.name, s.color, "dashed" if s.dashed else "line") for s in series])
    if not ys:
        canvas.note("Nothing to show yet")
    return canvas.svg(description or title)


def scatter_chart(
    chart_id: str,
    title: str,
    points: Sequence[tuple[float, float]],
    *,
    x_label: str,
    y_label: str,
    fit: tuple[float, float] | None = None,
    fit_label: str = "fitted line",
    color: str = BLUE,
    zero_line: bool = True,
    description: str = "",
    point_label: str = "episodes",
) -> Markup:
    """Points with an optional fitted line y = intercept + slope * x (`fit` = (intercept, slope))."""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x_lo, x_hi = padded_range(xs, 0.04)
    y_lo, y_hi = padded_range(ys, 0.06)
    canvas = _Canvas(
        chart_id,
        title,
        Scale(x_lo, x_hi, MARGIN_LEFT, WIDTH - MARGIN_RIGHT),
        Scale(y_lo, y_hi, HEIGHT - MARGIN_BOTTOM, MARGIN_TOP),
    )
    canvas.axes(
        [(t, _plain(t)) for t in nice_ticks(x_lo, x_hi) if x_lo <= t <= x_hi],
        _y_ticks(y_lo, y_hi, _plain),
        x_label,
        y_label,
    )
    if zero_line and y_lo < 0 < y_hi:
        y0 = canvas.y(0)
        canvas.add(
            f'<line class="reference" x1="{_n(canvas.left)}" x2="{_n(canvas.right)}" y1="{_n(y0)}" '
            f'y2="{_n(y0)}" stroke="{GREY}" stroke-dasharray="2 3"/>'
        )
    for x, y in points:
        canvas.add(
            f'<circle class="mark point" cx="{_n(canvas.x(x))}" cy="{_n(canvas.y(y))}" r="3" fill="{color}" '
            f'fill-opacity="0.55"><title>{escape(f"{x:.2f}, {y:g}")}</title></circle>',
            mark=True,
        )
    legend = [(point_label, color, "dot")]
    if fit is not None and points:
        intercept, slope = fit
        x0, x1 = min(xs), max(xs)
        canvas.add(
            f'<path class="mark fit" d="M{_n(canvas.x(x0))} {_n(canvas.y(intercept + slope * x0))} '
            f'L{_n(canvas.x(x1))} {_n(canvas.y(intercept + slope * x1))}" stroke="{VERMILLION}" '
            f'stroke-width="2.5" fill="none"><title>{escape(fit_label)}</title></path>',
            mark=True,
        )
        legend.append((fit_label, VERMILLION, "line"))
    canvas.legend(legend)
    if not points:
        canvas.note("Too few episodes to show")
    return canvas.svg(description or title)


@dataclass(frozen=True)
class FunnelPoint:
    """One therapist on the funnel plot."""

    label: str
    n: float
    value: float
    shrunken: float | None
    position: str


POSITION_COLORS = {
    "above_outer": GREEN,
    "above_inner": SKY,
    "within": GREY,
    "below_inner": ORANGE,
    "below_outer": VERMILLION,
}
POSITION_LABELS = {
    "above_outer": "above 99.8% limit",
    "above_inner": "above 95% limit",
    "within": "within limits",
    "below_inner": "below 95% limit",
    "below_outer": "below 99.8% limit",
}


def funnel_chart(
    chart_id: str,
    title: str,
    therapists: Sequence[FunnelPoint],
    *,
    grand: float | None,
    sigma: float | None,
    z_inner: float,
    z_outer: float,
    x_label: str,
    y_label: str,
    description: str = "",
    tau2: float = 0.0,
) -> Markup:
    """Therapist means against their n with funnel limits grand +- z * sqrt(sigma^2 / n + tau2)
    (tau2 = 0: the plain limits; tau2 > 0: allowing for overdispersion, Spiegelhalter 2005).

    Filled dots: raw means, coloured by position; hollow dots joined by a thin line: shrunken means.
    """
    ns = [t.n for t in therapists]
    values = [t.value for t in therapists] + [t.shrunken for t in therapists if t.shrunken is not None]
    n_hi = max(ns) * 1.1 if ns else 10.0
    n_lo = max(1.0, min(ns) * 0.7) if ns else 1.0
    limits: list[float] = []
    if grand is not None and sigma:
        limits = [grand + s * z_outer * math.sqrt(sigma**2 / n_lo + tau2) for s in (-1, 1)]
    y_lo, y_hi = padded_range([*values, *limits], 0.05)
    canvas = _Canvas(
        chart_id,
        title,
        Scale(n_lo, n_hi, MARGIN_LEFT, WIDTH - MARGIN_RIGHT),
        Scale(y_lo, y_hi, HEIGHT - MARGIN_BOTTOM, MARGIN_TOP),
    )
    canvas.axes(
        [(t, _plain(t)) for t in nice_ticks(n_lo, n_hi) if n_lo <= t <= n_hi],
        _y_ticks(y_lo, y_hi, lambda v: f"{v:.2f}"),
        x_label,
        y_label,
    )
    if grand is not None:
        gy = canvas.y(grand)
        canvas.add(
            f'<path class="mark grand" d="M{_n(canvas.left)} {_n(gy)} L{_n(canvas.right)} {_n(gy)}" '
            f'stroke="{GREY}" stroke-width="1.5" fill="none"><title>practice mean {grand:.2f}</title></path>',
            mark=True,
        )
    if grand is not None and sigma:
        steps = [n_lo + (n_hi - n_lo) * i / 60 for i in range(61)]
        for z, dash, name in ((z_inner, "5 4", "95%"), (z_outer, "2 3", "99.8%")):
            for sign in (-1, 1):
                d = "M" + " L".join(
                    f"{_n(canvas.x(n))} {_n(canvas.y(grand + sign * z * math.sqrt(sigma**2 / n + tau2)))}"
                    for n in steps
                )
                canvas.add(
                    f'<path class="mark limit" d="{d}" stroke="{GREY}" stroke-dasharray="{dash}" fill="none">'
                    f"<title>{name} limit (z = {z:g})</title></path>",
                    mark=True,
                )
    for t in therapists:
        x, y = canvas.x(t.n), canvas.y(t.value)
        color = POSITION_COLORS.get(t.position, GREY)
        if t.shrunken is not None:
            sy = canvas.y(t.shrunken)
            canvas.add(
                f'<line class="shrink" x1="{_n(x)}" x2="{_n(x)}" y1="{_n(y)}" y2="{_n(sy)}" '
                f'stroke="{color}"/>'
            )
            canvas.add(
                f'<circle class="mark shrunken" cx="{_n(x)}" cy="{_n(sy)}" r="3.5" fill="white" '
                f'stroke="{color}" stroke-width="1.5"><title>therapist {escape(t.label)}: shrunken mean '
                f"{t.shrunken:.2f}</title></circle>",
                mark=True,
            )
        canvas.add(
            f'<circle class="mark point" cx="{_n(x)}" cy="{_n(y)}" r="5" fill="{color}">'
            f"<title>therapist {escape(t.label)}: mean {t.value:.2f}, {t.n:g} patients rated, "
            f"{escape(POSITION_LABELS.get(t.position, t.position))}</title></circle>",
            mark=True,
        )
    present = [p for p in POSITION_COLORS if any(t.position == p for t in therapists)]
    canvas.legend(
        [(POSITION_LABELS[p], POSITION_COLORS[p], "dot") for p in present] + [("shrunken mean", GREY, "line")]
    )
    if not therapists:
        canvas.note("No therapist has a caseload large enough to show")
    return canvas.svg(description or title)


@dataclass(frozen=True)
class BarSeries:
    """One group member of a grouped bar chart: a value per category (None: not shown)."""

    name: str
    color: str
    values: Sequence[float | None]
    notes: Sequence[str] = ()


def bar_chart(
    chart_id: str,
    title: str,
    categories: Sequence[str],
    series: Sequence[BarSeries],
    *,
    x_label: str,
    y_label: str,
    y_range: tuple[float, float] | None = None,
    y_format: Callable[[float], str] = _plain,
    value_format: Callable[[float], str] = _plain,
    description: str = "",
) -> Markup:
    """Grouped vertical bars; a missing value is drawn as a labelled gap ('suppressed')."""
    values = [v for s in series for v in s.values if v is not None]
    lo, hi = y_range or (min(0.0, *values) if values else 0.0, (max(values) * 1.12) if values else 1.0)
    canvas = _Canvas(
        chart_id,
        title,
        Scale(0, max(len(categories), 1), MARGIN_LEFT, WIDTH - MARGIN_RIGHT),
        Scale(lo, hi, HEIGHT - MARGIN_BOTTOM, MARGIN_TOP),
    )
    canvas.axes(
        [(i + 0.5, c) for i, c in enumerate(categories)], _y_ticks(lo, hi, y_format), x_label, y_label
    )
    group_w = canvas.x(1) - canvas.x(0)
    bar_w = group_w * 0.7 / max(len(series), 1)
    for j, s in enumerate(series):
        for i, value in enumerate(s.values):
            x = canvas.x(i) + group_w * 0.15 + j * bar_w
            note = s.notes[i] if i < len(s.notes) else s.name
            if value is None:
                canvas.add(
                    f'<text class="suppressed" x="{_n(x + bar_w / 2)}" y="{_n(canvas.bottom - 6)}" '
                    f'text-anchor="middle"><title>{escape(note)}</title>n/s</text>'
                )
                continue
            top, base = canvas.y(max(value, lo)), canvas.y(max(lo, 0.0))
            canvas.add(
                f'<rect class="mark bar" x="{_n(x)}" y="{_n(min(top, base))}" width="{_n(bar_w - 2)}" '
                f'height="{_n(abs(base - top))}" fill="{s.color}"><title>{escape(note)}</title></rect>',
                mark=True,
            )
            canvas.add(
                f'<text class="bar-label" x="{_n(x + bar_w / 2 - 1)}" y="{_n(min(top, base) - 4)}" '
                f'text-anchor="middle">{escape(value_format(value))}</text>'
            )
    canvas.legend([(s.name, s.color, "box") for s in series])
    if not values:
        canvas.note("Too few patients to show")
    return canvas.svg(description or title)


def stacked_bar_chart(
    chart_id: str,
    title: str,
    rows: Sequence[tuple[str, Sequence[int]]],
    parts: Sequence[tuple[str, str]],
    *,
    x_label: str,
    description: str = "",
) -> Markup:
    """Horizontal stacked bars, one per row label; `parts` are (name, colour) of the stacked counts."""
    longest = max((len(label) for label, _ in rows), default=10)
    label_w = min(360, max(120, int(6.6 * longest) + 18))  # room for the longest row label
    row_h = 20
    height = MARGIN_TOP + MARGIN_BOTTOM + row_h * max(len(rows), 1)
    total = max((sum(v) for _, v in rows), default=0) or 1
    canvas = _Canvas(
        chart_id,
        title,
        Scale(0, total, label_w, WIDTH - MARGIN_RIGHT),
        Scale(0, max(len(rows), 1), MARGIN_TOP, height - MARGIN_BOTTOM),
        height=height,
    )
    ticks = [(t, _plain(t)) for t in nice_ticks(0, total) if t <= total and float(t).is_integer()]
    for value, label in ticks:
        x = canvas.x(value)
        canvas.add(
            f'<line class="grid" x1="{_n(x)}" x2="{_n(x)}" y1="{_n(canvas.top)}" y2="{_n(canvas.bottom)}" '
            f'stroke="{LIGHT}"/>'
        )
        canvas.add(
            f'<text class="tick" x="{_n(x)}" y="{_n(canvas.bottom + 17)}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    canvas.add(
        f'<text class="axis-label" x="{_n((label_w + canvas.right) / 2)}" y="{_n(height - 12)}" '
        f'text-anchor="middle">{escape(x_label)}</text>'
    )
    for i, (label, counts) in enumerate(rows):
        y = canvas.y(i) + 3
        canvas.add(
            f'<text class="tick" x="{label_w - 8}" y="{_n(y + row_h / 2 + 1)}" text-anchor="end">'
            f"{escape(label)}</text>"
        )
        start = 0
        for (name, color), count in zip(parts, counts, strict=True):
            if count <= 0:
                continue
            x0, x1 = canvas.x(start), canvas.x(start + count)
            canvas.add(
                f'<rect class="mark bar" x="{_n(x0)}" y="{_n(y)}" width="{_n(max(x1 - x0 - 1, 1))}" '
                f'height="{row_h - 6}" fill="{color}">'
                f"<title>{escape(label)}: {count} {escape(name)}</title></rect>",
                mark=True,
            )
            start += count
    canvas.legend([(name, color, "box") for name, color in parts])
    if not rows:
        canvas.note("No data-quality checks have run yet")
    return canvas.svg(description or title)
