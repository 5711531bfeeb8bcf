"""Helpers shared by the benchmark scripts: paths, peak memory, the machine description, results file."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DATA_DIR = BENCH_DIR / "data"
WORK_DIR = BENCH_DIR / "work"
RESULTS_FILE = BENCH_DIR / "results" / "latest.json"
PEERS_VENV = BENCH_DIR / ".peers-venv"
PEERS_PYTHON = PEERS_VENV / "bin" / "python"
PEERS_INSTALL_LOG = BENCH_DIR / ".peers-venv-install.log"


def peak_rss_mb(pid: str = "self") -> float | None:
    """Peak resident set size (VmHWM) of a process in MB, from /proc; None where /proc is missing."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+)\s+kB", text, re.MULTILINE)
    return round(int(match.group(1)) / 1024, 1) if match else None


def loadavg() -> float | None:
    """The 1-minute load average (other work on a shared machine shows here), None without /proc."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def rate(rows: int | None, seconds: float | None) -> float | None:
    """Rows per second, rounded; None when either side is missing or zero."""
    if not rows or not seconds:
        return None
    return round(rows / seconds, 1)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gb() -> float | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    match = re.search(r"^MemTotal:\s+(\d+)\s+kB", text, re.MULTILINE)
    return round(int(match.group(1)) / 1024 / 1024, 1) if match else None


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, RAM, OS, Python and library versions."""
    git = None
    try:
        git = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": _ram_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "duckdb": _version("duckdb"),
        "fhir.resources": _version("fhir.resources"),
        "orjson": _version("orjson"),
        "pandas": _version("pandas"),
        "git_commit": git,
        "shared": "2 cores shared with other work on the same machine: runs differ by up to 2x when the "
        "load is high (each stage records the 1-minute load average before and after it)",
    }


def now_iso() -> str:
    """The current UTC time, to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def read_json(path: Path) -> Any:
    """Parse a JSON file."""
    return orjson.loads(path.read_bytes())


def write_json(path: Path, data: Any) -> None:
    """Write JSON with sorted keys and indentation, atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    os.replace(tmp, path)


def python_env() -> dict[str, str]:
    """Environment for child processes: quiet telemetry, repository on the import path."""
    env = dict(os.environ)
    env.setdefault("GX_ANALYTICS_ENABLED", "false")
    env.setdefault("DO_NOT_TRACK", "1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def this_python() -> str:
    """The interpreter running the benchmarks (the project's .venv under `make bench`)."""
    return sys.executable
