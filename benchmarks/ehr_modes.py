"""EHR access modes benchmark: pull time and request count of a system pull, a Group-level Bulk
export and a patient-scoped REST pull of the same clinic (docs/ehr-access.md).

    python -m benchmarks.ehr_modes --clinic demo --patients 300     # the demo clinic (make demo)
    python -m benchmarks.ehr_modes --clinic scale --responses 100000  # benchmarks.generate's data set

Starts sekmet-fhir (`demo.server`), loads the clinic, creates its Group (`Group/clinic`), then pulls
all ten resource types into a fresh landing database per mode with `pipelines.extract` (as the raw
assets do): `system` straight from sekmet, `group-bulk` and `patient-rest` through
`demo.ehr_proxy` (the restrictive EHR). Requests are counted on the client side (every HTTP request
of the mode's clients, retries and probes included). The raw tables of the three modes are compared
(type, id, version, lastUpdated, content hash; and the rejected rows). Results go to
`benchmarks/results/ehr_modes.json` under the clinic's name (`demo`, `scale_<responses>`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from pipelines.extract import SourceSpec, extract_resource_type
from pipelines.resources.fhir import FhirClient
from pipelines.resources.fhir.ratelimit import RateLimitedSession, RateLimiter
from pipelines.settings import RESOURCE_TYPES
from pipelines.warehouse import Warehouse, table_for
from quality_checks.structural import StructuralValidator

GROUP = "clinic"
RESULTS = Path(__file__).resolve().parent / "results" / "ehr_modes.json"


def scale_clinic(responses: int, seed: int) -> Any:
    """The scale generator's data set as `GeneratedData` (meta removed; later versions second)."""
    from benchmarks.generate import ScaleConfig, ensure_dataset, folder_for
    from demo.generator import GeneratedData

    folder, _, _ = ensure_dataset(ScaleConfig(responses=responses, seed=seed), folder_for(responses))
    first: list[dict[str, Any]] = []
    later: list[dict[str, Any]] = []
    for rtype in RESOURCE_TYPES:
        path = folder / f"{rtype}.ndjson"
        if not path.exists():
            continue
        seen: set[str] = set()
        with path.open("rb") as fh:
            for line in fh:
                try:
                    res = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # the planted truncated line: nothing a server would store
                res.pop("meta", None)
                (later if res.get("id") in seen else first).append(res)
                seen.add(str(res.get("id")))
    return GeneratedData(versions=[first, later], manifest={})


def snapshot(db: Path) -> set[tuple[Any, ...]]:
    """Every landed version and every rejected row of a landing database."""
    out: set[tuple[Any, ...]] = set()
    with Warehouse(db).connect() as con:
        for rtype in RESOURCE_TYPES:
            rel = con.table(f"raw.{table_for(rtype)}")
            out |= set(rel.select("resource_type, id, version_id, last_updated, content_sha256").fetchall())
        rejected = con.table("raw.rejected").select("'rejected', resource_type, id, version_id, reason")
        out |= set(rejected.fetchall())
    return out


def pull_mode(db: Path, spec: SourceSpec, make: Callable[[], FhirClient]) -> float:
    """Pull every type into `db`; the seconds it took."""
    t0 = time.monotonic()
    with Warehouse(db).connect() as con:
        for rtype in RESOURCE_TYPES:
            extract_resource_type(con, spec, make(), rtype, "bench", StructuralValidator())
    return time.monotonic() - t0


def run(
    clinic: str, patients: int, responses: int, seed: int, concurrency: int, modes: list[str]
) -> dict[str, Any]:
    """Load the server and pull it in each mode; return seconds, requests and the comparison."""
    from demo.ehr_proxy import running_ehr_proxy
    from demo.generator import GeneratorConfig, generate
    from demo.loader import load_to_server, patient_ids_of, put_group
    from demo.server import running_server

    data = (
        generate(GeneratorConfig(patients=patients, seed=seed))
        if clinic == "demo"
        else scale_clinic(responses, seed)
    )
    tmp = tempfile.TemporaryDirectory(prefix="bench-ehr-")
    results: dict[str, Any] = {}
    with tmp, running_server(Path(tmp.name) / "srv") as server:
        t0 = time.monotonic()
        loaded = load_to_server(server.base_url, data)
        members = patient_ids_of(data)
        put_group(server.base_url, members, GROUP)
        print(
            f"loaded {loaded['entries']} versions ({len(members)} patients) in {time.monotonic() - t0:.0f}s"
        )
        # Nothing changes on the server while the modes run: the proxy's per-type index is kept for
        # the whole benchmark (sekmet has no patient index; a real EHR answers from its own).
        with running_ehr_proxy(server.base_url, cache_seconds=3600) as proxy:
            specs = {
                "system": (server.base_url, SourceSpec(name="ehr")),
                "group-bulk": (
                    proxy.base_url,
                    SourceSpec(
                        name="ehr",
                        kind="bulk",
                        bulk_level="group",
                        bulk_group_id=GROUP,
                        bulk_poll_interval_s=0.2,
                        landing_dir=str(Path(tmp.name) / "bulk"),
                    ),
                ),
                "patient-rest": (
                    proxy.base_url,
                    SourceSpec(
                        name="ehr",
                        search_scope="patient",
                        patient_group=GROUP,
                        patient_concurrency=concurrency,
                    ),
                ),
            }
            snaps = {}
            for mode, (base, spec) in specs.items():
                if mode not in modes:
                    continue
                limiter = RateLimiter(0)

                def make(base: str = base, limiter: RateLimiter = limiter) -> FhirClient:
                    return FhirClient(base, session=RateLimitedSession(limiter))

                spec.client_factory = make
                db = Path(tmp.name) / f"{mode}.duckdb"
                seconds = pull_mode(db, spec, make)
                snaps[mode] = snapshot(db)
                results[mode] = {
                    "seconds": round(seconds, 2),
                    "requests": limiter.count,
                    "rows": len(snaps[mode]),
                }
                print(f"  {mode:<13} {seconds:7.1f}s  {limiter.count:6d} requests  {len(snaps[mode])} rows")
    return {
        "command": f"python -m benchmarks.ehr_modes --clinic {clinic}"
        + (f" --patients {patients}" if clinic == "demo" else f" --responses {responses}"),
        "versions_loaded": loaded["entries"],
        "patients": len(members),
        "patient_concurrency": concurrency,
        "modes": results,
        # The raw layers of the modes run, compared with each other.
        "identical_raw": len({frozenset(v) for v in snaps.values()}) == 1,
        "compared_modes": sorted(snaps),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and record it in benchmarks/results/ehr_modes.json."""
    parser = argparse.ArgumentParser(description="System vs Group-level Bulk vs patient-scoped REST pulls")
    parser.add_argument("--clinic", choices=("demo", "scale"), default="demo")
    parser.add_argument("--patients", type=int, default=300, help="demo clinic size")
    parser.add_argument("--responses", type=int, default=100_000, help="scale data set size")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--modes", default="system,group-bulk,patient-rest", help="comma-separated subset of the modes to run"
    )
    args = parser.parse_args(argv)
    from benchmarks.common import machine, now_iso, read_json, write_json

    modes = [m for m in args.modes.split(",") if m]
    result = run(args.clinic, args.patients, args.responses, args.seed, args.concurrency, modes)
    result["measured_at"] = now_iso()
    result["machine"] = machine()
    results = read_json(RESULTS) if RESULTS.exists() else {}
    results["demo" if args.clinic == "demo" else f"scale_{args.responses}"] = result
    write_json(RESULTS, results)
    print(f"identical raw tables: {result['identical_raw']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
