"""REST extraction benchmark: the pipeline's FHIR client against a minimal `requests` loop, same pages.

    python -m benchmarks.rest --responses 20000

Starts the real local FHIR server (`demo.server.running_server`, sekmet-fhir in its own process),
loads N QuestionnaireResponses of the scale generator's data set (`demo.loader.load_to_server`,
version 1 of every response, then the version-2 updates), then alternates, `--repeats` times:

- pipeline: `FhirClient.pull("QuestionnaireResponse", since=None)` as the raw asset calls it (pull
  mode `auto`: one capability probe, then `_count`-paged search following next links, de-duplicating
  by id and version, counting pages);
- minimal: a `requests.Session` loop over `QuestionnaireResponse?_count=N` following the next links,
  parsing each page with orjson (the same parser the client uses, so only the client's own work
  differs).

Reports the median rate of each and their ratio (pipeline / minimal; the target is >= 0.9) into
`benchmarks/results/latest.json` under `rest`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import requests

from benchmarks.common import rate
from benchmarks.generate import ScaleConfig, ensure_dataset, folder_for

FHIR_JSON = "application/fhir+json"


def read_responses(folder: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(version 1 resources, version 2 resources) of the data set, without meta (the server stamps it)."""
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []
    with (folder / "QuestionnaireResponse.ndjson").open("rb") as fh:
        for line in fh:
            try:
                res = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # the planted truncated line: a server would refuse it
            meta = res.pop("meta", {})
            (second if meta.get("versionId") == "2" else first).append(res)
    return first, second


def pull_pipeline(base_url: str, page_size: int) -> tuple[int, int, float]:
    """(resources, pages, seconds) for the pipeline's client, as the raw asset pulls."""
    from pipelines.resources.fhir import FhirClient

    t0 = time.monotonic()
    client = FhirClient(base_url, page_size=page_size)
    stream = client.pull("QuestionnaireResponse", since=None, mode="auto")
    n = sum(1 for _ in stream)
    seconds = time.monotonic() - t0
    client.session.close()
    return n, stream.stats.pages, seconds


def pull_minimal(base_url: str, page_size: int) -> tuple[int, int, float]:
    """(resources, pages, seconds) for the least code that pages through the same search."""
    t0 = time.monotonic()
    n = pages = 0
    with requests.Session() as http:
        url: str | None = f"{base_url}/QuestionnaireResponse?_count={page_size}"
        while url:
            response = http.get(url, headers={"Accept": FHIR_JSON}, timeout=(10, 120))
            response.raise_for_status()
            bundle = orjson.loads(response.content)
            pages += 1
            entries = bundle.get("entry") or []
            if not entries:
                break
            n += len(entries)
            url = next((ln["url"] for ln in bundle.get("link", []) if ln.get("relation") == "next"), None)
    return n, pages, time.monotonic() - t0


def run(responses: int, seed: int, page_size: int, repeats: int) -> dict[str, Any]:
    """Load the server, time both pulls `repeats` times (alternating) and return the numbers."""
    from demo.generator import GeneratedData
    from demo.loader import load_to_server
    from demo.server import running_server

    folder, _, _ = ensure_dataset(ScaleConfig(responses=responses, seed=seed), folder_for(responses))
    first, second = read_responses(folder)
    data = GeneratedData(versions=[first, second], manifest={})
    tmp = tempfile.TemporaryDirectory(prefix="bench-rest-")
    with tmp, running_server(Path(tmp.name) / "srv") as server:
        t0 = time.monotonic()
        loaded = load_to_server(server.base_url, data)
        load_s = time.monotonic() - t0
        print(f"loaded {loaded['entries']} versions in {load_s:.1f}s", flush=True)
        runs: dict[str, list[dict[str, Any]]] = {"pipeline": [], "minimal": []}
        for i in range(repeats):
            order = ("pipeline", "minimal") if i % 2 == 0 else ("minimal", "pipeline")
            for name in order:
                fn = pull_pipeline if name == "pipeline" else pull_minimal
                n, pages, seconds = fn(server.base_url, page_size)
                runs[name].append({"resources": n, "pages": pages, "seconds": round(seconds, 3)})
                print(f"  {name:<8} {n} resources, {pages} pages, {seconds:.2f}s", flush=True)
    pipeline_s = statistics.median(r["seconds"] for r in runs["pipeline"])
    minimal_s = statistics.median(r["seconds"] for r in runs["minimal"])
    n_pipeline = runs["pipeline"][0]["resources"]
    n_minimal = runs["minimal"][0]["resources"]
    pipeline_rate = rate(n_pipeline, pipeline_s)
    minimal_rate = rate(n_minimal, minimal_s)
    return {
        "command": f"python -m benchmarks.rest --responses {responses}",
        "responses": len(first),
        "versions_loaded": loaded["entries"],
        "load_seconds": round(load_s, 2),
        "load_per_s": rate(loaded["entries"], load_s),
        "page_size": page_size,
        "repeats": repeats,
        "same_resources": n_pipeline == n_minimal,
        "pipeline_runs": runs["pipeline"],
        "requests_runs": runs["minimal"],
        "pipeline_per_s": pipeline_rate,
        "requests_per_s": minimal_rate,
        "ratio": round(pipeline_rate / minimal_rate, 3) if pipeline_rate and minimal_rate else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Pipeline REST pull vs a minimal requests loop")
    parser.add_argument("--responses", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--page-size", type=int, default=500, help="the pipeline's default page size")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    from benchmarks.common import now_iso
    from benchmarks.run import load_results, save_results

    result = run(args.responses, args.seed, args.page_size, args.repeats)
    result["measured_at"] = now_iso()
    results = load_results()
    results["rest"] = result
    save_results(results)
    print(
        f"pipeline {result['pipeline_per_s']}/s vs minimal requests loop {result['requests_per_s']}/s: "
        f"ratio {result['ratio']} (target >= 0.9)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
