"""The marts layer: clinical staging, session and episode metrics, therapist effects, QI aggregates.

Pure Python + DuckDB (no Dagster): `marts.build.build_marts(con, settings)` builds everything; the
thin Dagster assets in `assets/marts.py` call the same functions one table at a time. Column-by-column
documentation and every metric definition: docs/marts.md.
"""
