"""Benchmarks: a scale generator, a stage-by-stage runner, peers, REST pull and validation studies.

Run from the repository root: `make bench SCALE=100000` (see docs/benchmarks.md). Nothing here is
imported by the pipeline; the peers run in their own virtual environment (`benchmarks/.peers-venv`).
"""
