"""The offline QI report (`reports/qi_report.html`): `build_report(con, path)` (marts.report.build),
inline SVG charts (marts.report.charts) and the page template (marts.report.template)."""

from marts.report.build import ReportResult, build_report, render_report, report_path

__all__ = ["ReportResult", "build_report", "render_report", "report_path"]
