"""The Dagster instance folder (`$DAGSTER_HOME`) and the instance settings in it.

Dagster reads its instance settings only from `$DAGSTER_HOME/dagster.yaml`. The repository's
`dagster.yaml` holds them (run-queue tag limits, run retries, telemetry off), but `.dagster_home/` is
git-ignored, so a fresh clone has no instance file and Dagster silently falls back to its defaults
(no tag limits, no run retries, telemetry on) after a "No dagster instance configuration file"
warning. `make install` therefore copies the file in (the Makefile says why a copy and not a link),
and every other place that prepares an instance folder (the demo runner, the test suite's temporary
homes) calls `install_instance_config`, which applies the same rule.

No Dagster import here: the helper runs before Dagster is imported, and in the tests' conftest.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
REPO_DAGSTER_YAML = REPO_ROOT / "dagster.yaml"
DEFAULT_DAGSTER_HOME = REPO_ROOT / ".dagster_home"
INSTANCE_FILE = "dagster.yaml"


def install_instance_config(
    home: Path, *, replace_older: bool = True, source: Path = REPO_DAGSTER_YAML
) -> Path:
    """Make `home` an instance folder configured by the repository's `dagster.yaml` and return the
    instance file's path.

    The folder is created if needed. The file is copied in when it is missing, or, with
    `replace_older` (the Makefile's rule), when the repository's file is newer than the copy. With
    `replace_older=False` an existing instance file is left alone: a folder named by the operator's own
    `DAGSTER_HOME` may hold a production configuration (e.g. Postgres storage).
    """
    home.mkdir(parents=True, exist_ok=True)
    target = home / INSTANCE_FILE
    if target.exists():
        if not replace_older or target.stat().st_mtime >= source.stat().st_mtime:
            return target
    # Write beside the target and rename, so a Dagster process starting meanwhile never reads half a
    # file.
    partial = home / f".{INSTANCE_FILE}.partial"
    shutil.copyfile(source, partial)
    partial.replace(target)
    return target
