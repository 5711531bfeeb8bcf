"""Launch the embedded FHIR R4 server (sekmet-fhir) as a real process on 127.0.0.1.

Used by `make demo`, `make server` and the pytest fixtures. The server is a separate process
spoken to over HTTP; nothing here fakes it.

Settings chosen for a pipeline test bed (measured with sekmet-fhir 0.1.1):
- `validation.inbound: off`: store what it is given, as EHR servers do, so the pipeline's own
  structural validation is what gets tested (strict mode refuses real forms such as NLM's PHQ-9).
- host 127.0.0.1 only; simulator off (it would add hospital workflow resources); traffic log off.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

log = logging.getLogger(__name__)


def free_port(preferred: int = 0) -> int:
    """A TCP port on 127.0.0.1 that is free right now: `preferred` if it is, else any free one."""
    for candidate in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError("no free TCP port on 127.0.0.1")


def _sekmet_executable() -> str:
    """The `sekmet` console script of the running interpreter's environment."""
    candidate = Path(sys.executable).with_name("sekmet")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("sekmet")
    if not found:
        raise RuntimeError("sekmet-fhir is not installed: run `make install` (it is in the demo extra)")
    return found


@dataclass
class FhirServer:
    """A running sekmet-fhir process. Use `start()`/`stop()` or `running_server()`."""

    data_dir: Path
    port: int = 0
    auth: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_settings(self) -> Path:
        """Write the server's settings.yaml into its data folder and return its path."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        settings: dict[str, Any] = {
            "base_url": self.base_url,
            "host": "127.0.0.1",
            "port": self.port,
            "data_dir": str(self.data_dir),
            "validation": {"inbound": "off"},
            "simulator": {"enabled": False},
            "log_inbound": False,
            "own_private_key_path": str(self.data_dir / "keys" / "sekmet_private.pem"),
        }
        if self.auth:
            settings["server_auth"] = self.auth
        path = self.data_dir / "settings.yaml"
        path.write_text(yaml.safe_dump(settings, sort_keys=False))
        return path

    def start(self, timeout: float = 60.0) -> FhirServer:
        """Start the process and wait until `/metadata` answers."""
        if not self.port:
            self.port = free_port()
        settings = self.write_settings()
        self.log_path = self.data_dir / "server.log"
        env = dict(os.environ)
        env.pop("SEKMET_BASE_URL", None)
        env.pop("SEKMET_PORT", None)
        logfile = self.log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [
                _sekmet_executable(),
                "serve",
                "--config",
                str(settings),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=self.data_dir,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"FHIR server exited with {self.process.returncode}; see {self.log_path}")
            try:
                r = requests.get(f"{self.base_url}/metadata", timeout=2)
                if r.status_code in (200, 401):
                    log.info("FHIR server up at %s", self.base_url)
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"FHIR server did not answer within {timeout:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@contextlib.contextmanager
def running_server(data_dir: Path, port: int = 0, auth: dict[str, Any] | None = None) -> Iterator[FhirServer]:
    """Context manager: a started server that is stopped on exit."""
    server = FhirServer(data_dir=data_dir, port=port, auth=auth or {}).start()
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the embedded FHIR R4 server on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--data-dir", type=Path, default=Path("data/fhir-server"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = FhirServer(data_dir=args.data_dir.resolve(), port=args.port).start()
    log.info("FHIR base URL: %s (Ctrl-C to stop)", server.base_url)
    try:
        assert server.process is not None  # noqa: S101 - set by start()
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
