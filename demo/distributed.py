"""`make demo-distributed`: the pipeline beyond one process, on one machine.

Starts, as local processes on 127.0.0.1 only, with their data under `data/services/`:
- PostgreSQL (the Dagster instance: runs, event logs, schedules; `deploy/dagster.postgres.yaml`);
- Redis (the Celery broker and result backend);
- the Dagster daemon (dequeues runs under the run-queue limits, retries failed runs) serving the code
  location `pipelines.distributed`, whose jobs send every step to Celery;
- two Celery workers, one step at a time each;
then loads two synthetic clinics into two FHIR servers (two sources), launches the raw pull of both
sources at once and then the downstream layers, prints on which worker each step ran, and stops
everything it started, also when something fails.

The `Cluster` class is what tests/integration/test_distributed.py uses too. Passwords for Postgres and
Redis are made up per start and handed to the processes through the environment only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from demo.server import free_port

REPO = Path(__file__).resolve().parent.parent
POSTGRES_YAML = REPO / "deploy" / "dagster.postgres.yaml"
log = logging.getLogger("alliance_qi.distributed")


def _venv_bin() -> Path:
    return Path(sys.executable).parent


def postgres_bin_dir() -> Path:
    """The PostgreSQL server binaries: `$PG_BIN`, Debian's newest /usr/lib/postgresql/*/bin, or PATH."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql (or set PG_BIN)")


def _stop_group(proc: subprocess.Popen[Any] | None, grace_s: float = 20.0) -> None:
    """SIGTERM the process group `proc` leads, then SIGKILL whatever is left after `grace_s`."""
    if proc is None or proc.poll() is not None:
        # The leader is gone, but its children (a daemon's run processes) may not be.
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _wait_until(check: Any, what: str, timeout: float, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with code {proc.returncode}")
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f}s")


@dataclass
class Postgres:
    """A PostgreSQL server of our own: a fresh cluster in `data_dir`, listening on 127.0.0.1 only.

    PostgreSQL refuses to run as root; as root the cluster belongs to the `postgres` user and lives in
    a folder of its own under the system temporary folder (the user must be able to reach it).
    """

    data_dir: Path
    log_file: Path
    port: int = 0
    user: str = "dagster"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    db: str = "dagster"
    process: subprocess.Popen[bytes] | None = None
    _os_user: str | None = None
    _own_tmp: Path | None = None

    @property
    def url(self) -> str:
        """The SQLAlchemy URL for dagster-postgres (psycopg2 named: SQLAlchemy 2.1 would pick psycopg 3)."""
        return f"postgresql+psycopg2://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.db}"

    def _run(self, args: list[str], **kw: Any) -> None:
        subprocess.run(
            args, check=True, user=self._os_user, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw
        )

    def init(self) -> Postgres:
        """initdb with password authentication (scram) for every connection, and the database."""
        bin_dir = postgres_bin_dir()
        if os.geteuid() == 0:
            self._os_user = "postgres"
            self._own_tmp = Path(tempfile.mkdtemp(prefix="alliance-qi-pg-"))
            shutil.chown(self._own_tmp, user="postgres")
            self.data_dir = self._own_tmp / "data"
        self.port = self.port or free_port()
        pwfile = (self._own_tmp or self.data_dir.parent) / "pwfile"
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        pwfile.write_text(self.password)
        pwfile.chmod(0o600)
        if self._os_user:
            shutil.chown(pwfile, user=self._os_user)
        try:
            self._run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.user,
                    "--pwfile",
                    str(pwfile),
                    "--auth",
                    "scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            )
        finally:
            pwfile.unlink()
        self.start()
        env = {**os.environ, "PGPASSWORD": self.password}
        self._run(
            [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.db],
            env=env,
        )
        return self

    def start(self) -> None:
        """Start the server (again) on the same port and data folder; returns once it accepts connections."""
        bin_dir = postgres_bin_dir()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        out = self.log_file.open("ab")
        self.process = subprocess.Popen(
            [
                str(bin_dir / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.data_dir}",
                "-c",
                "max_connections=200",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            user=self._os_user,
            start_new_session=True,
        )
        out.close()
        isready = [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"]
        _wait_until(
            lambda: subprocess.run(isready, check=False).returncode == 0, "postgres", 60, self.process
        )

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open transactions are rolled back, the data folder stays."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                _stop_group(self.process, 0)
        self.process = None

    def restart(self) -> None:
        """Stop and start again, as a database failover or a maintenance restart does."""
        self.stop()
        self.start()

    def remove(self) -> None:
        """Stop and delete the root-owned temporary folder, if one was made."""
        self.stop()
        if self._own_tmp is not None:
            shutil.rmtree(self._own_tmp, ignore_errors=True)


@dataclass
class Redis:
    """A Redis server of our own on 127.0.0.1, with a password, no persistence (the broker holds
    queued steps only while a run waits for them; Dagster's state is in Postgres)."""

    work_dir: Path
    port: int = 0
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    process: subprocess.Popen[bytes] | None = None

    def url(self, db: int) -> str:
        """The Redis URL of database `db` (0: broker, 1: results)."""
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"

    def start(self) -> Redis:
        """Write a 0600 config file (the password is not on the command line) and start the server."""
        exe = shutil.which("redis-server")
        if not exe:
            raise RuntimeError("redis-server not found: apt-get install redis-server")
        self.port = self.port or free_port()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        conf = self.work_dir / "redis.conf"
        conf.write_text("")
        conf.chmod(0o600)
        conf.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {self.port}",
                    f"requirepass {self.password}",
                    "protected-mode yes",
                    'save ""',
                    "appendonly no",
                    f"dir {self.work_dir}",
                    f"logfile {self.work_dir / 'redis.log'}",
                    "",
                ]
            )
        )
        self.process = subprocess.Popen([exe, str(conf)], start_new_session=True)
        import redis

        def ping() -> bool:
            try:
                return bool(redis.Redis(host="127.0.0.1", port=self.port, password=self.password).ping())
            except redis.RedisError:
                return False

        _wait_until(ping, "redis", 30, self.process)
        return self

    def stop(self) -> None:
        """Stop the server."""
        _stop_group(self.process, 10)
        self.process = None


@dataclass
class Cluster:
    """Postgres, Redis, a Dagster daemon and Celery workers for one code location, on 127.0.0.1.

    Use as a context manager: on exit (normal or not) every process it started is stopped. While it is
    open, `os.environ` carries the instance's settings, so `instance()` and the Dagster CLI reach the
    same Postgres-backed instance as the daemon and the workers.
    """

    root: Path
    module: str = "pipelines.distributed"
    workers: tuple[str, ...] = ("worker1", "worker2")
    extra_env: Mapping[str, str] = field(default_factory=dict)
    postgres: Postgres | None = None
    redis: Redis | None = None
    daemon: subprocess.Popen[bytes] | None = None
    worker_procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    _saved_env: dict[str, str | None] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start every service, in dependency order, and wait until each one is ready."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        self.postgres = Postgres(self.root / "postgres" / "data", self.log_dir / "postgres.log").init()
        self.redis = Redis(self.root / "redis").start()
        log.info(
            "postgres on 127.0.0.1:%s, redis on 127.0.0.1:%s (%.1fs)",
            self.postgres.port,
            self.redis.port,
            time.monotonic() - t0,
        )
        self.home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(POSTGRES_YAML, self.home / "dagster.yaml")
        self.env = {
            "DAGSTER_HOME": str(self.home),
            "DAGSTER_PG_URL": self.postgres.url,
            "DAGSTER_CELERY_BROKER_URL": self.redis.url(0),
            "DAGSTER_CELERY_BACKEND_URL": self.redis.url(1),
            **self.extra_env,
        }
        for key, value in self.env.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value
        with self.instance():
            pass  # creates the schema once, before the daemon and the workers race to do it
        self.daemon = self._spawn("daemon", [str(_venv_bin() / "dagster-daemon"), "run", "-m", self.module])
        for name in self.workers:
            self.start_worker(name)
        _wait_until(self._daemon_ready, "dagster daemon heartbeat", 120, self.daemon)
        log.info("daemon and workers %s up (%.1fs)", ", ".join(self.workers), time.monotonic() - t0)

    def process_env(self) -> dict[str, str]:
        """The environment of the daemon and the workers: ours, the venv's bin first on PATH (the
        workers find `celery` there), the repository importable."""
        env = dict(os.environ)
        env.update(self.env)
        env["PATH"] = f"{_venv_bin()}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        return env

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        out = (self.log_dir / f"{name}.log").open("ab")
        self._logs.append(out)
        return subprocess.Popen(
            args,
            cwd=REPO,
            env=self.process_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        """One Celery worker, one step at a time (`-c 1`), on the queue dagster-celery uses."""
        proc = self._spawn(
            name,
            [
                str(_venv_bin() / "celery"),
                "-A",
                "pipelines.celery_worker",
                "worker",
                "-Q",
                "dagster",
                "-c",
                "1",
                "-n",
                f"{name}@%h",
                "--loglevel",
                "INFO",
                "--without-mingle",
                "--without-gossip",
            ],
        )
        self.worker_procs[name] = proc
        _wait_until(
            lambda: "ready." in (self.log_dir / f"{name}.log").read_text(), f"celery {name}", 120, proc
        )
        return proc

    def worker_children(self, name: str) -> list[int]:
        """Pids of the pool processes of worker `name` (where its steps run)."""
        pid = self.worker_procs[name].pid
        children = Path(f"/proc/{pid}/task/{pid}/children")
        return [int(p) for p in children.read_text().split()] if children.exists() else []

    def _daemon_ready(self) -> bool:
        with self.instance() as instance:
            return bool(instance.get_daemon_heartbeats())

    @contextlib.contextmanager
    def instance(self) -> Iterator[Any]:
        """The Postgres-backed Dagster instance (the same the daemon and the workers use)."""
        import dagster as dg

        # By folder, not through $DAGSTER_HOME, which a caller (a test fixture) may point elsewhere.
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            yield instance

    def launch(self, job: str, partition: str | None = None, tags: Mapping[str, str] | None = None) -> str:
        """Queue a run with `dagster job launch` (what an operator or a schedule does) and return its id."""
        marker = uuid.uuid4().hex
        all_tags = {"alliance_qi/launch": marker, **(tags or {})}
        if partition:
            all_tags["dagster/partition"] = partition
        cmd = [str(_venv_bin() / "dagster"), "job", "launch", "-m", self.module, "-j", job]
        cmd += ["--tags", json.dumps(all_tags)]
        done = subprocess.run(
            cmd, cwd=REPO, env=self.process_env(), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"dagster job launch {job} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
            )
        import dagster as dg

        with self.instance() as instance:
            records = instance.get_run_records(dg.RunsFilter(tags={"alliance_qi/launch": marker}))
        if not records:
            raise RuntimeError(f"dagster job launch {job}: no run with tag {marker}")
        return str(records[0].dagster_run.run_id)

    def wait(self, run_id: str, timeout: float = 1800.0, follow_retries: bool = True) -> tuple[str, str]:
        """Wait until the run ends; with `follow_retries`, follow the daemon's automatic retries of a
        failed run to the last one. Returns (final run id, status name)."""
        import dagster as dg

        deadline = time.monotonic() + timeout
        current = run_id
        failed_since: float | None = None
        with self.instance() as instance:
            while time.monotonic() < deadline:
                run = instance.get_run_by_id(current)
                status = run.status if run else None
                if status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.CANCELED):
                    return current, status.value
                if status == dg.DagsterRunStatus.FAILURE:
                    if not follow_retries:
                        return current, status.value
                    child = instance.get_run_records(dg.RunsFilter(tags={"dagster/parent_run_id": current}))
                    if child:
                        current = child[0].dagster_run.run_id
                        continue
                    # The daemon decides about a retry within a few seconds of the failure.
                    retry_tags = run.tags if run else {}
                    if "dagster/will_retry" in retry_tags and retry_tags["dagster/will_retry"] == "false":
                        return current, status.value
                    if self.daemon is None or self.daemon.poll() is not None:
                        return current, status.value
                    # The daemon's retry loop ticks every few seconds; a minute without a retry run
                    # means none is coming (retries used up, or not retryable).
                    failed_since = failed_since or time.monotonic()
                    if time.monotonic() - failed_since > 60:
                        return current, status.value
                else:
                    failed_since = None
                time.sleep(0.5)
        raise TimeoutError(f"run {current} did not finish within {timeout:.0f}s")

    def step_workers(self, run_id: str) -> dict[str, str]:
        """Step key -> the Celery worker that executed it in this run (from the run's engine events)."""
        where: dict[str, str] = {}
        with self.instance() as instance:
            for record in instance.all_logs(run_id):
                event = record.dagster_event
                if event is None or not event.is_engine_event or event.step_key is None:
                    continue
                data = event.engine_event_data
                worker = data.metadata.get("Celery worker") if data is not None else None
                if worker is not None:
                    where[event.step_key] = str(getattr(worker, "value", worker))
        return where

    def stop(self) -> None:
        """Stop the workers, the daemon (and the runs it started), Redis and Postgres."""
        for proc in self.worker_procs.values():
            _stop_group(proc)
        self.worker_procs.clear()
        _stop_group(self.daemon)
        self.daemon = None
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.remove()
        for f in self._logs:
            f.close()
        self._logs.clear()
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()


def two_source_file(path: Path, warehouse: Path, sources: Mapping[str, Mapping[str, Any]]) -> Path:
    """A sources file for the run: the warehouse path and the named sources."""
    import yaml

    first = next(iter(sources))
    path.write_text(
        yaml.safe_dump({"warehouse": str(warehouse), "default_source": first, "sources": dict(sources)})
    )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The main job for two sources on Postgres, Redis and Celery")
    parser.add_argument("--patients", type=int, default=150, help="patients per source (two sources)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--root", type=Path, default=REPO / "data" / "services")
    parser.add_argument(
        "--raw-only", action="store_true", help="pull the two sources, skip the downstream job"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    from demo.generator import GeneratorConfig, generate
    from demo.loader import load_to_server
    from demo.server import running_server

    shutil.rmtree(args.root, ignore_errors=True)  # fresh services, fresh warehouse, every time
    args.root.mkdir(parents=True)
    warehouse = args.root / "warehouse" / "warehouse.duckdb"
    names = ("site_a", "site_b")
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        servers = {n: stack.enter_context(running_server(args.root / "fhir" / n)) for n in names}
        for i, name in enumerate(names):
            data = generate(GeneratorConfig(patients=args.patients, seed=args.seed + i))
            load_to_server(servers[name].base_url, data)
        sources = {n: {"kind": "rest", "base_url": s.base_url, "page_size": 200} for n, s in servers.items()}
        sources_file = two_source_file(args.root / "sources.yaml", warehouse, sources)
        from marts.privacy import KEY_FILE_ENV, ensure_demo_key

        key = ensure_demo_key(REPO / "data" / "pseudonym.key")
        env = {"ALLIANCE_QI_SOURCES": str(sources_file), KEY_FILE_ENV: str(key)}
        cluster = stack.enter_context(Cluster(args.root, extra_env=env))
        log.info(
            "services up after %.0fs; launching the raw pull of %s",
            time.monotonic() - t0,
            " and ".join(names),
        )
        t_raw = time.monotonic()
        runs = {n: cluster.launch("raw_extract_job", n) for n in names}
        results = {n: cluster.wait(r) for n, r in runs.items()}
        raw_s = time.monotonic() - t_raw
        final = dict(results)
        downstream_s = 0.0
        if all(status == "SUCCESS" for _, status in results.values()) and not args.raw_only:
            t_down = time.monotonic()
            final["downstream"] = cluster.wait(cluster.launch("downstream_job"))
            downstream_s = time.monotonic() - t_down
        lines = ["", f"{'run':<12}{'status':<10}{'step':<52}worker"]
        for label, (run_id, status) in final.items():
            for step, worker in sorted(cluster.step_workers(run_id).items()):
                lines.append(f"{label:<12}{status:<10}{step:<52}{worker}")
        lines += [
            "",
            f"raw pulls of both sources: {raw_s:.1f}s; downstream: {downstream_s:.1f}s",
            f"warehouse: {warehouse}",
            f"logs: {cluster.log_dir}",
        ]
        sys.stdout.write("\n".join(lines) + "\n")
        ok = all(status == "SUCCESS" for _, status in final.values())
    sys.stdout.write(f"\nEverything started was stopped. Done in {time.monotonic() - t0:.0f}s.\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
