"""Wall time, CPU and memory of the raw pulls on Celery workers against the in-process executor.

    .venv/bin/python -m benchmarks.distributed --folder benchmarks/data/100000      # a folder source
    .venv/bin/python -m benchmarks.distributed --patients 150                      # two REST sources

Both runs pull the same sources into their own warehouse: first the in-process job
(`raw_extract_in_process`, SQLite instance), then `raw_extract_job` on the cluster `make
demo-distributed` starts (Postgres, Redis, the daemon, two Celery workers). For the cluster, every
process group (postgres, redis, the daemon with the run processes it starts, each worker) is sampled
every 0.5 s from /proc: peak resident memory and CPU seconds. The code location is
`tests.support.raw_location` (the raw pulls; docs/deployment.md says why). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from demo.distributed import REPO, Cluster, two_source_file

MODULE = "tests.support.raw_location"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


def _group_usage(pgid: int) -> tuple[int, float]:
    """(resident bytes, CPU seconds) summed over the live processes of a process group."""
    rss, cpu = 0, 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) != pgid:  # field 5 of stat, after pid and comm
            continue
        cpu += (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
        rss += int(fields[21]) * PAGE
    return rss, cpu


class Sampler:
    """Peak RSS and CPU seconds per named process group while the block runs."""

    def __init__(self, groups: dict[str, int]) -> None:
        self.groups = groups
        self.peak: dict[str, int] = dict.fromkeys(groups, 0)
        self.cpu_start = {n: _group_usage(g)[1] for n, g in groups.items()}
        self.cpu: dict[str, float] = dict.fromkeys(groups, 0.0)
        self._stop = threading.Event()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            for name, pgid in self.groups.items():
                rss, cpu = _group_usage(pgid)
                self.peak[name] = max(self.peak[name], rss)
                # CPU of processes that ended is lost from the group sum; keep the highest seen.
                self.cpu[name] = max(self.cpu[name], cpu - self.cpu_start[name])

    @contextlib.contextmanager
    def running(self) -> Iterator[Sampler]:
        thread = threading.Thread(target=self._loop, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()

    def report(self) -> dict[str, dict[str, float]]:
        return {
            n: {"peak_rss_mb": round(self.peak[n] / 2**20, 1), "cpu_s": round(self.cpu[n], 1)}
            for n in self.groups
        }


def in_process(sources_file: Path, names: list[str], home: Path) -> dict[str, Any]:
    """The reference: the pulls on the in-process executor, one source after the other."""
    from pipelines.instance import install_instance_config

    install_instance_config(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FHIR_", "WAREHOUSE_"))}
    env.update(ALLIANCE_QI_SOURCES=str(sources_file), PYTHONPATH=str(REPO), DAGSTER_HOME=str(home))
    t0 = time.monotonic()
    for name in names:
        cmd = [str(Path(sys.executable).parent / "dagster"), "job", "execute", "-m", MODULE]
        cmd += ["-j", "raw_extract_in_process", "--tags", json.dumps({"dagster/partition": name})]
        subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    seconds = time.monotonic() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(peak_kb / 1024, 1)}


def distributed(sources_file: Path, names: list[str], root: Path) -> dict[str, Any]:
    """The same pulls on the cluster: all sources launched at once, timed launch to last success."""
    t0 = time.monotonic()
    with Cluster(root, module=MODULE, extra_env={"ALLIANCE_QI_SOURCES": str(sources_file)}) as cluster:
        startup = time.monotonic() - t0
        pg, rd, daemon = cluster.postgres, cluster.redis, cluster.daemon
        if not (pg and pg.process and rd and rd.process and daemon):
            raise RuntimeError("the cluster did not start every service")
        groups = {
            "postgres": pg.process.pid,
            "redis": rd.process.pid,
            "daemon_and_runs": daemon.pid,
            **{name: proc.pid for name, proc in cluster.worker_procs.items()},
        }
        sampler = Sampler(groups)
        with sampler.running():
            t1 = time.monotonic()
            runs = {n: cluster.launch("raw_extract_job", n) for n in names}
            final = {n: cluster.wait(r, timeout=7200) for n, r in runs.items()}
            seconds = time.monotonic() - t1
        where = {n: cluster.step_workers(r) for n, (r, _) in final.items()}
    return {
        "startup_seconds": round(startup, 1),
        "seconds": round(seconds, 1),
        "status": {n: s for n, (_, s) in final.items()},
        "steps_per_worker": {
            w: sum(1 for steps in where.values() for x in steps.values() if x.startswith(w))
            for w in ("worker1", "worker2")
        },
        "processes": sampler.report(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--folder", type=Path, help="a folder source (benchmarks/generate.py output)")
    parser.add_argument("--patients", type=int, default=150, help="patients per REST source (two)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    from demo.server import running_server

    with (
        tempfile.TemporaryDirectory(prefix="alliance-qi-dist-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        root = Path(tmp)
        if args.folder:
            sources: dict[str, dict[str, Any]] = {
                "bench": {"kind": "folder", "folder": str(args.folder.resolve())}
            }
        else:
            from demo.generator import GeneratorConfig, generate
            from demo.loader import load_to_server

            sources = {}
            for i, name in enumerate(("site_a", "site_b")):
                server = stack.enter_context(running_server(root / "fhir" / name))
                load_to_server(
                    server.base_url, generate(GeneratorConfig(patients=args.patients, seed=args.seed + i))
                )
                sources[name] = {"kind": "rest", "base_url": server.base_url, "page_size": 200}
        names = list(sources)
        ref = in_process(
            two_source_file(root / "ref.yaml", root / "ref" / "w.duckdb", sources), names, root / "home"
        )
        dist = distributed(
            two_source_file(root / "dist.yaml", root / "dist" / "w.duckdb", sources), names, root / "svc"
        )
        print(json.dumps({"sources": sources, "in_process": ref, "distributed": dist}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
