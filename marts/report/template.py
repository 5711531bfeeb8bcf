"""The QI report's HTML page: inline CSS and a few lines of inline JavaScript, nothing fetched.

The charts are SVG drawn in Python, so the page shows them without JavaScript. The script only
checks, once the page has loaded, that each chart has drawn marks with a non-empty box, and records
the result on `<body data-rendered="ok">` (a headless browser test reads it); any script error is
recorded on `<html data-js-error="...">`.
"""

from __future__ import annotations

from html import escape
from string import Template

CSS = """
:root { --ink: #1d1d1f; --muted: #5b5b60; --line: #d9d9de; --bg: #ffffff; --panel: #f6f6f8; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; color: var(--ink); background: var(--bg); }
header, main, footer { max-width: 980px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 28px; border-bottom: 1px solid var(--line); padding-bottom: 12px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 36px 0 6px; padding-top: 8px; border-top: 1px solid var(--line); }
.meta { color: var(--muted); font-size: 13px; margin: 0; }
nav ol { display: flex; flex-wrap: wrap; gap: 4px 18px; padding: 0; margin: 10px 0 0; list-style: none;
         font-size: 13px; }
nav a { color: #0b5cad; text-decoration: none; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 10px;
         margin: 16px 0; }
.card { background: var(--panel); border-radius: 6px; padding: 10px 12px; }
.card .value { font-size: 22px; font-weight: 600; }
.card .label { font-size: 12px; color: var(--muted); }
.caption { margin: 4px 0 10px; max-width: 820px; }
.n { color: var(--muted); font-size: 13px; margin: 4px 0 14px; }
figure { margin: 8px 0 18px; }
svg.chart { width: 100%; height: auto; max-width: 900px; display: block; background: #fff; }
svg.chart text { font-family: inherit; fill: #333; }
svg.chart .tick { font-size: 11px; fill: #555; }
svg.chart .axis-label { font-size: 12px; fill: #333; }
svg.chart .legend { font-size: 12px; }
svg.chart .ref-label, svg.chart .bar-label, svg.chart .suppressed { font-size: 11px; fill: #555; }
svg.chart .empty { font-size: 14px; fill: #777; }
.two { display: grid; grid-template-columns: 1fr; gap: 6px; }
table { border-collapse: collapse; font-size: 12.5px; margin: 8px 0 16px; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 6px; text-align: right; white-space: nowrap; }
th { background: var(--panel); font-weight: 600; }
th:first-child, td:first-child { text-align: left; }
td.sup { color: #999; }
.scroll { overflow-x: auto; }
.note { font-size: 13px; color: var(--muted); }
footer { border-top: 1px solid var(--line); margin-top: 36px; padding: 12px 20px 40px; font-size: 12.5px;
         color: var(--muted); }
@media print { h2 { break-before: auto; } figure, table { break-inside: avoid; } nav { display: none; } }
"""

# Records a script error where a headless test can read it from the dumped DOM.
HEAD_SCRIPT = """
window.addEventListener('error', function (e) {
  document.documentElement.setAttribute('data-js-error', String(e.message || e));
});
"""

# Checks that every chart drew marks with a real box (layout ran), then marks the page as rendered.
CHECK_SCRIPT = """
(function () {
  var charts = document.querySelectorAll('svg.chart');
  var empty = [];
  for (var i = 0; i < charts.length; i++) {
    var svg = charts[i];
    var marks = svg.querySelectorAll('.mark').length;
    var box = svg.getBBox();
    svg.setAttribute('data-drawn-marks', String(marks));
    svg.setAttribute('data-drawn-size', Math.round(box.width) + 'x' + Math.round(box.height));
    if (!marks || !(box.width > 0) || !(box.height > 0)) { empty.push(svg.getAttribute('data-chart')); }
  }
  document.body.setAttribute('data-charts', String(charts.length));
  document.body.setAttribute('data-rendered', empty.length ? 'empty:' + empty.join(',') : 'ok');
})();
"""

PAGE = Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="alliance-qi $version">
<title>$title</title>
<style>$css</style>
<script>$head_script</script>
</head>
<body>
<header>
<h1>$title</h1>
<p class="meta">$meta</p>
<nav><ol>$nav</ol></nav>
</header>
<main>
$sections
</main>
<footer>
$footer
</footer>
<script>$check_script</script>
</body>
</html>
"""
)


def render_page(*, title: str, meta: str, nav: str, sections: str, footer: str, version: str) -> str:
    """The whole page; every argument except `title` and `version` is already escaped HTML."""
    return PAGE.substitute(
        title=escape(title),
        meta=meta,
        nav=nav,
        sections=sections,
        footer=footer,
        version=escape(version),
        css=CSS,
        head_script=HEAD_SCRIPT,
        check_script=CHECK_SCRIPT,
    )
