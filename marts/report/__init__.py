"""The offline QI report (`reports/qi_report.html`): `build_report(con, path)` (marts.report.render) reads
only the marts, inline SVG charts (marts.report.charts), Jinja2 page templates (marts/report/templates)."""

from marts.report.render import ReportResult, build_report, render_report, report_path

__all__ = ["ReportResult", "build_report", "render_report", "report_path"]
