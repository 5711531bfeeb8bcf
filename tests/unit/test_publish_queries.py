"""docs/qi-queries.md stays true: every ```sql block runs against a file published from generated data
and returns exactly the columns its `-- returns:` line names (and some rows)."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from marts.build import RESTRICTED_MARTS
from marts.publish import publish_marts
from pipelines.settings import REPO_ROOT
from tests.support.generated_warehouse import generated_warehouse_file

DOC = REPO_ROOT / "docs" / "qi-queries.md"
BLOCK = re.compile(r"```sql\n(.*?)```", re.S)
RETURNS = re.compile(r"^-- returns: (.+)$", re.M)


def _blocks() -> list[str]:
    return BLOCK.findall(DOC.read_text())


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both targets published from the generated warehouse: target -> its DuckDB file."""
    source = generated_warehouse_file(tmp_path_factory)
    out = tmp_path_factory.mktemp("published")
    # publish from a read-only view of the shared warehouse through an in-memory connection
    con = duckdb.connect()
    try:
        con.execute("ATTACH ? AS warehouse (READ_ONLY)", [str(source)])
        con.execute("USE warehouse")
        for target in ("bi", "restricted"):
            publish_marts(con, out / target, run_id="docs-test", target=target)
    finally:
        con.close()
    return {target: out / target / "marts.duckdb" for target in ("bi", "restricted")}


def _target(sql: str) -> str:
    """The target a doc query runs against: restricted when it reads a record-level mart."""
    record_level = any(re.search(rf"\b{m}\b", sql) for m in RESTRICTED_MARTS)
    return "restricted" if record_level else "bi"


def test_the_doc_has_queries_for_every_question():
    blocks = _blocks()
    assert len(blocks) >= 10
    text = DOC.read_text()
    for heading in (
        "Which therapists' clients report low alliance?",
        "Who is not on track?",
        "Adherence by rater",
        "Monthly KPI trend",
        "Rupture and repair rates",
    ):
        assert f"## {heading}" in text
    for sql in blocks:
        assert RETURNS.search(sql), sql[:80]
        # published tables are addressed by plain name; `marts.<table>` is the warehouse's naming
        assert not re.search(r"\bmarts\.\w", sql), sql[:80]


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_every_query_runs_and_returns_its_named_columns(published, index):
    sql = _blocks()[index]
    match = RETURNS.search(sql)
    assert match is not None
    expected = [c.strip() for c in match.group(1).split(",")]
    con = duckdb.connect(str(published[_target(sql)]), read_only=True)
    try:
        cursor = con.execute(sql)
        columns = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    finally:
        con.close()
    assert columns == expected
    assert rows, "the query returned no rows on the generated clinic"
