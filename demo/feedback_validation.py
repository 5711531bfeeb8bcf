"""Validate the not-on-track flag on a generated clinic: `python -m demo.feedback_validation`.

Generates a clinic with planted not-on-track trajectories (`GeneratorConfig.not_on_track_rate`),
lands it from NDJSON files (no server), scores it, builds the marts, then trains the expected-response
curves on the earlier half of the closed episodes and tests the session-3/4 flag on the later half
(`marts.feedback.validate`), against "no reliable improvement at the end" and against the planted
truth, at each horizon asked for. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import duckdb

from demo.generator import GeneratorConfig, generate
from demo.loader import write_ndjson
from fhir_mappings.flatten import build_questionnaire_answers
from fhir_mappings.questionnaires import build_questionnaire_tables
from fhir_mappings.scoring import build_measure_scores
from marts.build import build_marts, make_context
from marts.feedback import validate
from marts.settings import load_mart_settings
from pipelines.extract import SourceSpec, extract_resource_type
from pipelines.settings import RESOURCE_TYPES
from pipelines.warehouse import ensure_raw_schema
from quality_checks.structural import StructuralValidator

# A fixed key: the validation never publishes anything, the key only has to be the same in one run.
VALIDATION_KEY = b"feedback-validation-key-0123456789"


def run(
    patients: int, seed: int, horizons: list[int], quantiles: list[float], min_cell_n: int
) -> dict[str, Any]:
    """Generate, land, score and build; then validate at each horizon. Returns the results."""
    clinic = generate(GeneratorConfig(patients=patients, seed=seed))
    planted = {k: bool(v["planted_not_on_track"]) for k, v in clinic.manifest["truth"]["episodes"].items()}
    with tempfile.TemporaryDirectory(prefix="feedback-validation-") as tmp:
        folder = Path(tmp) / "ndjson"
        write_ndjson(folder, clinic)
        con = duckdb.connect(str(Path(tmp) / "warehouse.duckdb"))
        try:
            ensure_raw_schema(con)
            spec = SourceSpec(name="demo", kind="folder", folder=str(folder))
            validator = StructuralValidator()
            for rtype in RESOURCE_TYPES:
                extract_resource_type(con, spec, None, rtype, "validation", validator)
            build_questionnaire_answers(con)
            build_questionnaire_tables(con)
            build_measure_scores(con)
            build_marts(con, load_mart_settings(env={}), key=VALIDATION_KEY)
            results = []
            for quantile in quantiles:
                for horizon in horizons:
                    settings = load_mart_settings(
                        env={},
                        feedback_horizon_sessions=horizon,
                        not_on_track_quantile=quantile,
                        feedback_min_cell_n=min_cell_n,
                    )
                    results.append(validate(con, make_context(settings, VALIDATION_KEY), planted=planted))
        finally:
            con.close()
    return {
        "patients": patients,
        "seed": seed,
        "planted_rate": GeneratorConfig().not_on_track_rate,
        "episodes_planted": sum(planted.values()),
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--horizons", default="3,4,5,6", help="comma-separated session horizons")
    parser.add_argument("--quantiles", default="0.75", help="comma-separated not_on_track_quantile values")
    parser.add_argument("--min-cell-n", type=int, default=20)
    args = parser.parse_args(argv)
    horizons = [int(h) for h in args.horizons.split(",") if h.strip()]
    quantiles = [float(q) for q in args.quantiles.split(",") if q.strip()]
    print(json.dumps(run(args.patients, args.seed, horizons, quantiles, args.min_cell_n), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
