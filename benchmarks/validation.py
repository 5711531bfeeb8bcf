"""Validation study: can every resource of a 1M-response load be validated structurally in time?

    python -m benchmarks.validation --scale 100000 --sample 40000

Plain `fhir.resources` validation (~0.35 ms per QuestionnaireResponse) is the slowest part of
landing. On a sample of the scale generator's data (every planted bad record plus an even spread of
the rest) this measures:

1. the pipeline's `StructuralValidator` with the full model for every resource
   (`fast_path=False`), one core, per resource type;
2. the same in worker processes (`--workers`, 2 on this machine);
3. the validator's shape-cached fast path (`quality_checks/shape_cache.py`, the default), one core
   and in workers, and whether it gives exactly the full model's outcome (rejected, reason, every
   finding) on every sampled resource, on every planted bad record, and on `--mutants` random
   single corruptions of clean resources (a leaf changed in type or value, a key dropped, renamed
   or added, a null, a value wrapped in a list);
4. how many versions share their content (what skipping re-validation by content hash would save
   on a first load; a no-change rerun already validates nothing);
5. the other per-resource costs of landing: parsing each NDJSON line and hashing it.

Projections to 1M responses scale the measured per-resource rate by the data set's resources per
response. Results go to `benchmarks/results/latest.json` under `validation` (and the docs table).
When the tree's validator has no fast path, only the full-model rows are measured.
"""

from __future__ import annotations

import argparse
import inspect
import random
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import now_iso, rate, read_json
from benchmarks.generate import TYPES, ScaleConfig, ensure_dataset, folder_for
from quality_checks.structural import StructuralValidator, ValidationOutcome

ONE_MILLION = 1_000_000


def has_fast_path() -> bool:
    """Whether this tree's StructuralValidator takes `fast_path` (the shape cache)."""
    return "fast_path" in inspect.signature(StructuralValidator).parameters


def make_validator(fast: bool) -> StructuralValidator:
    """The pipeline's validator with the fast path on or off (off when the tree has none)."""
    if has_fast_path():
        return StructuralValidator(fast_path=fast)
    return StructuralValidator()


# ---------------------------------------------------------------- the study


def load_sample(folder: Path, sample: int) -> list[tuple[str, dict[str, Any]]]:
    """Every planted bad record (by type and id) plus an even spread of the others, up to `sample`."""
    manifest = read_json(folder / "manifest.json")
    planted = {(p["resourceType"], p["id"]) for p in manifest["planted"] if p["id"]}
    total = manifest["total_lines"]
    stride = max(1, total // max(1, sample - len(planted)))
    out: list[tuple[str, dict[str, Any]]] = []
    n = 0
    for rtype in TYPES:
        with (folder / f"{rtype}.ndjson").open("rb") as fh:
            for line in fh:
                n += 1
                try:
                    res = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # unparseable lines never reach the validator
                if (rtype, res.get("id")) in planted or n % stride == 0:
                    out.append((rtype, res))
    return out


def _outcome_key(o: ValidationOutcome) -> tuple[Any, ...]:
    return (o.rejected, o.reason, tuple(o.findings))


def _guarded(v: Any, res: dict[str, Any], rtype: str) -> tuple[Any, ...]:
    """The outcome key, or ('raised', exception type) when the validator raises (it should not)."""
    try:
        return _outcome_key(v.validate(res, expected_type=rtype))
    except Exception as exc:
        return ("raised", f"{type(exc).__name__}: {exc}", ())


def _time(fn: Any, items: list[tuple[str, dict[str, Any]]]) -> tuple[list[ValidationOutcome], float]:
    t0 = time.perf_counter()
    outs = [fn(res, expected_type=rtype) for rtype, res in items]
    return outs, time.perf_counter() - t0


# Workers: one validator per process, fed NDJSON bytes (what a parallel lander would hand over).
_WORKER: dict[str, Any] = {}


def _worker_init(kind: str) -> None:
    _WORKER["v"] = make_validator(fast=kind == "fast")
    _WORKER["v"].validate({"resourceType": "Patient", "id": "warm"}, "Patient")  # import the models


def _worker_chunk(chunk: list[tuple[str, bytes]]) -> list[tuple[Any, ...]]:
    v = _WORKER["v"]
    return [_outcome_key(v.validate(orjson.loads(b), expected_type=t)) for t, b in chunk]


def _parallel(kind: str, items: list[tuple[str, dict[str, Any]]], workers: int) -> tuple[list[Any], float]:
    payload = [(t, orjson.dumps(r)) for t, r in items]
    chunks = [payload[i : i + 500] for i in range(0, len(payload), 500)]
    with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init, initargs=(kind,)) as pool:
        list(
            pool.map(
                _worker_chunk, [[("Patient", orjson.dumps({"resourceType": "Patient", "id": "w"}))]] * workers
            )
        )
        t0 = time.perf_counter()
        results = [k for part in pool.map(_worker_chunk, chunks) for k in part]
        seconds = time.perf_counter() - t0
    return results, seconds


def _mutants(
    items: list[tuple[str, dict[str, Any]]], n: int, seed: int
) -> Iterator[tuple[str, dict[str, Any], str]]:
    """Random single corruptions of resources: a leaf changed in type or value, a key dropped,
    renamed or added, a null, a list turned into an object. Deterministic for a seed."""
    rng = random.Random(seed)
    junk: list[Any] = ["", " ", "last tuesday", "2026-13-45", "x y", -1, 0, 1.5, True, None, {}, [], "a" * 70]
    junk += ["2026-02-30T10:00:00Z", "2026-01-05T25:00:00-05:00", "LA6568-5 ", "Patient/", "http://x y"]

    def paths(node: Any, prefix: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
        if isinstance(node, dict):
            for k, v in node.items():
                yield (*prefix, k)
                yield from paths(v, (*prefix, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield (*prefix, i)
                yield from paths(v, (*prefix, i))

    for _ in range(n):
        rtype, res = items[rng.randrange(len(items))]
        copy = orjson.loads(orjson.dumps(res))
        candidates = [p for p in paths(copy, ()) if p and p[0] not in ("resourceType", "id")]
        if not candidates:
            continue
        path = rng.choice(candidates)
        parent = copy
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        action = rng.choice(("leaf", "leaf", "drop", "rename", "add", "null", "wrap"))
        if action == "drop" and isinstance(parent, dict):
            del parent[last]
        elif action == "rename" and isinstance(parent, dict):
            parent[str(last) + "x"] = parent.pop(last)
        elif action == "add" and isinstance(parent, dict):
            parent[rng.choice(("extension", "id", "text", "foo", "_" + str(last)))] = rng.choice(junk)
        elif action == "null":
            parent[last] = None
        elif action == "wrap":
            parent[last] = [parent[last]] if not isinstance(parent[last], list) else {"x": parent[last]}
        else:
            parent[last] = rng.choice(junk)
        yield rtype, copy, f"{action} {'.'.join(str(p) for p in path)}"


def _planted_check(
    manifest: dict[str, Any],
    items: list[tuple[str, dict[str, Any]]],
    full: list[ValidationOutcome],
    fast: list[ValidationOutcome],
) -> dict[str, int]:
    """On the generator's planted records: expected rejections, each path's, and agreement."""
    expect = {(p["resourceType"], p["id"], p["version"]): p["expect"] for p in manifest["planted"] if p["id"]}
    out = {"records": 0, "expected_rejected": 0, "rejected_full": 0, "rejected_fast": 0, "agree": 0}
    for (t, r), a, b in zip(items, full, fast, strict=True):
        exp = expect.get((t, r.get("id"), str((r.get("meta") or {}).get("versionId", "1"))))
        if exp is None:
            continue
        out["records"] += 1
        out["expected_rejected"] += exp == "rejected"
        out["rejected_full"] += a.rejected
        out["rejected_fast"] += b.rejected
        out["agree"] += _outcome_key(a) == _outcome_key(b) and a.rejected == (exp == "rejected")
    return out


def study(scale: int, seed: int, sample: int, workers: int, mutants: int) -> dict[str, Any]:
    """Run every measurement and return the `validation` entry of latest.json."""
    from pipelines.raw_writer import content_hash
    from pipelines.resources.fhir import iter_folder

    folder, manifest, _ = ensure_dataset(ScaleConfig(responses=scale, seed=seed), folder_for(scale))
    items = load_sample(folder, sample)
    per_resource_1m = manifest["total_lines"] / manifest["responses"] * ONE_MILLION
    fast_available = has_fast_path()
    print(f"sample: {len(items)} resources of {folder}; fast path in tree: {fast_available}", flush=True)

    full = make_validator(fast=False)
    full.validate({"resourceType": "Patient", "id": "warm"}, "Patient")  # the model import, untimed
    full_out, full_s = _time(full.validate, items)
    by_type: dict[str, dict[str, Any]] = {}
    for rtype in TYPES:
        sub = [(t, r) for t, r in items if t == rtype]
        if sub:
            _, s = _time(full.validate, sub)
            by_type[rtype] = {"n": len(sub), "full_model_per_s": rate(len(sub), s)}
    print(f"full model: {rate(len(items), full_s)}/s", flush=True)

    def design(name: str, seconds: float, equivalence: str) -> dict[str, Any]:
        per_s = rate(len(items), seconds)
        return {
            "design": name,
            "per_s": per_s,
            "projected_1m_seconds": round(per_resource_1m / per_s) if per_s else None,
            "equivalence": equivalence,
        }

    par_full, par_full_s = _parallel("full", items, workers)
    reference = [_outcome_key(o) for o in full_out]
    designs = [
        design("full model (fast_path=False), 1 core", full_s, "(reference)"),
        design(
            f"full model, {workers} worker processes",
            par_full_s,
            "identical" if par_full == reference else "DIFFERENT",
        ),
    ]
    result: dict[str, Any] = {
        "command": f"python -m benchmarks.validation --scale {scale} --sample {sample}",
        "measured_at": now_iso(),
        "scale": scale,
        "sample": len(items),
        "resources_per_1m_responses": round(per_resource_1m),
        "fast_path_in_tree": fast_available,
        "by_type": by_type,
        "designs": designs,
    }
    if fast_available:
        fast = make_validator(fast=True)
        fast_out, fast_s = _time(fast.validate, items)  # cold: a fresh validator, as a landing run
        for rtype in TYPES:
            sub = [(t, r) for t, r in items if t == rtype]
            if sub:
                _, s = _time(make_validator(fast=True).validate, sub)
                by_type[rtype]["fast_path_cold_per_s"] = rate(len(sub), s)
        differ = [(t, r.get("id")) for (t, r), a, b in zip(items, full_out, fast_out, strict=True) if a != b]
        print(f"fast path: {rate(len(items), fast_s)}/s, {len(differ)} outcomes differ", flush=True)
        par_fast, par_fast_s = _parallel("fast", items, workers)
        same = "identical on every sampled resource" if not differ else f"{len(differ)} DIFFER"
        designs.append(design("shape-cached fast path (default), 1 core", fast_s, same))
        designs.append(
            design(
                f"fast path, {workers} worker processes",
                par_fast_s,
                "identical" if par_fast == reference else "DIFFERENT",
            )
        )
        result["fast_path_stats"] = fast.stats.as_dict() if hasattr(fast, "stats") else None
        result["differences"] = differ[:20]
        result["planted"] = _planted_check(manifest, items, full_out, fast_out)

        mutant_total = mutant_bad = 0
        disagreements: list[str] = []
        raised: list[str] = []
        clean = [i for i, o in zip(items, full_out, strict=True) if not o.findings]
        for rtype, res, what in _mutants(clean, mutants, seed):
            a, b = _guarded(full, res, rtype), _guarded(fast, res, rtype)
            mutant_total += 1
            mutant_bad += a[0] is not False or bool(a[2])
            if a[0] == "raised":
                raised.append(f"{rtype}: {what}: {a[1]}")
            if a != b:
                disagreements.append(f"{rtype}: {what}")
        result["mutants"] = {
            "total": mutant_total,
            "with_findings": mutant_bad,
            "disagreements": len(disagreements),
            "disagreement_examples": disagreements[:20],
            "full_model_raised": len(raised),
            "full_model_raised_examples": sorted(set(raised))[:10],
        }
        print(
            f"mutants: {mutant_total}, {mutant_bad} with findings, {len(disagreements)} disagree", flush=True
        )

    hashes = [content_hash(r) for _, r in items]
    t0 = time.perf_counter()
    parsed = sum(1 for _ in iter_folder(folder))
    parse_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _, r in items:
        content_hash(r)
    hash_s = time.perf_counter() - t0
    result["content_dedupe"] = {
        "distinct_content_share": round(len(set(hashes)) / len(hashes), 4),
        "note": "versions with distinct content in the sample: what a content-hash skip cannot save on a "
        "first load; a no-change rerun already validates nothing (versions known by id + versionId)",
    }
    result["other_landing_costs"] = {
        "parse_all_files_once_per_s": rate(parsed, parse_s),
        "content_hash_per_s": rate(len(items), hash_s),
        "note": "per resource line; the folder source parses every file once per resource type",
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Validation speed and equivalence study")
    parser.add_argument("--scale", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sample", type=int, default=40_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mutants", type=int, default=3_000)
    args = parser.parse_args(argv)
    from benchmarks.run import load_results, save_results

    result = study(args.scale, args.seed, args.sample, args.workers, args.mutants)
    results = load_results()
    results["validation"] = result
    save_results(results)
    for d in result["designs"]:
        print(
            f"  {d['design']:<45} {d['per_s']:>10}/s  1M: {d['projected_1m_seconds']} s  {d['equivalence']}"
        )
    print(f"  planted: {result.get('planted')}; mutants: {result.get('mutants', {}).get('total')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
