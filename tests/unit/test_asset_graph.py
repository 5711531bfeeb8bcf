"""A snapshot of the asset graph: keys, deps, groups, layer tags, descriptions and checks.

Any change to the graph fails this test until the snapshot is regenerated on purpose:
`ALLIANCE_QI_UPDATE_SNAPSHOT=1 .venv/bin/python -m pytest tests/unit/test_asset_graph.py`, then review
the diff of tests/unit/snapshots/asset_graph.json like any other change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from pipelines.catalog import load_catalog
from pipelines.definitions import defs

SNAPSHOT = Path(__file__).resolve().parent / "snapshots" / "asset_graph.json"


def graph() -> dict[str, Any]:
    """The asset graph as plain data (sorted, so the snapshot is stable)."""
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    assets: dict[str, Any] = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "layer": node.tags.get("layer"),
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "description": node.description,
            "partitioned": node.partitions_def is not None,
            "checks": sorted(c.name for c in node.check_keys),
        }
    return {
        "assets": assets,
        "jobs": sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")),
    }


def test_asset_graph_matches_snapshot() -> None:
    current = graph()
    if os.environ.get("ALLIANCE_QI_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text()), (
        "asset graph changed: regenerate the snapshot on purpose"
    )


def test_group_and_layer_tag_agree() -> None:
    for key, node in graph()["assets"].items():
        assert node["group"] in {"raw", "staging", "marts", "published"}, key
        assert node["layer"] == node["group"], key


def test_every_declared_table_is_an_asset_or_a_declared_check_output() -> None:
    catalog = load_catalog()
    keys = set(graph()["assets"])
    for table in catalog.all_tables():
        if table.schema == "quality":
            assert "asset checks" in catalog.writers[table.name], table.name
        else:
            assert dg.AssetKey(table.name.split(".")).to_user_string() in keys, table.name


def test_every_derived_asset_links_its_sql_file() -> None:
    repo = defs.get_repository_def()
    for key in repo.asset_graph.get_all_asset_keys():
        if key.path[0] not in ("staging", "marts"):
            continue
        refs = repo.asset_graph.get(key).metadata["dagster/code_references"]
        files = [Path(r.file_path) for r in refs.code_references]
        assert any(f.suffix == ".sql" and f.exists() for f in files), key
