"""CLI: generate the synthetic clinic, write NDJSON and/or load it into a FHIR server.

python -m demo.generate --patients 300 --seed 42 --mess-rate 0.03 [--ndjson DIR] [--server BASE_URL]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from demo.generator import MESS_KINDS, GeneratorConfig, effect_summary, generate
from demo.loader import LoadError, load_to_server, verify_on_server, write_ndjson


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = argparse.ArgumentParser(
        description="Generate a deterministic synthetic therapy clinic as FHIR R4"
    )
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--mess-rate", type=float, default=0.03, help="rate of each kind of planted mess; 0 = none"
    )
    parser.add_argument("--clinics", type=int, default=3)
    parser.add_argument("--therapists", type=int, default=12)
    parser.add_argument(
        "--ndjson", type=Path, help="write <ResourceType>.ndjson + manifest.json into this folder"
    )
    parser.add_argument("--server", help="FHIR base URL to load into with transaction Bundles")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--verify", action="store_true", help="after loading, read every planted resource back"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    t0 = time.perf_counter()
    config = GeneratorConfig(
        patients=args.patients,
        seed=args.seed,
        mess_rate=args.mess_rate,
        clinics=args.clinics,
        therapists=args.therapists,
    )
    data = generate(config)
    out = sys.stdout
    m = data.manifest
    out.write(f"generated {args.patients} patients (seed {args.seed}) in {time.perf_counter() - t0:.1f} s\n")
    for rtype, n in m["counts"].items():
        versions = m["version_count"][rtype]
        out.write(f"  {rtype:<22} {n:>7}" + (f"  ({versions} versions)" if versions != n else "") + "\n")
    out.write("planted mess: " + ", ".join(f"{k}={m['mess_counts'][k]}" for k in MESS_KINDS) + "\n")
    effects = effect_summary(data)
    out.write(
        "built-in effects: " + ", ".join(f"{k}={v:.2f}" for k, v in effects.items() if v is not None) + "\n"
    )

    if args.ndjson:
        written = write_ndjson(args.ndjson, data)
        out.write(f"wrote {sum(written['lines'].values())} NDJSON lines to {written['folder']}\n")
    if args.server:
        t1 = time.perf_counter()
        try:
            counts = load_to_server(args.server, data, batch_size=args.batch_size)
        except LoadError as exc:
            out.write(f"load failed: {exc}\n")
            return 1
        out.write(
            f"loaded {counts['entries']} resource versions in {counts['bundles']} bundles "
            f"into {args.server} in {time.perf_counter() - t1:.1f} s\n"
        )
        if args.verify:
            problems = verify_on_server(args.server, data)
            out.write(f"verified {len(m['mess'])} planted resources: {len(problems)} problems\n")
            for p in problems[:20]:
                out.write(f"  {p}\n")
            if problems:
                return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
