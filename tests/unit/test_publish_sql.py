"""Publishing through SQL files: the warehouse's marts are named through its catalog when that name is
a plain identifier, and publishing works whatever the warehouse file is called."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from marts.publish import PublishError, publish_marts, published_row_counts, source_mart


def test_source_mart_qualifies_plain_catalogs_only() -> None:
    assert source_mart("warehouse", "qi_monthly") == "warehouse.marts.qi_monthly"
    assert source_mart("marts", "qi_monthly") == "marts.marts.qi_monthly"
    # Not a plain identifier: not `marts` either, so the current database's `marts.<mart>` is meant.
    assert source_mart("alliance-qi", "qi_monthly") == "marts.qi_monthly"
    assert source_mart('x"; DROP TABLE y; --', "qi_monthly") == "marts.qi_monthly"


@pytest.mark.parametrize("file_name", ["marts.duckdb", "alliance-qi.duckdb", "warehouse.duckdb"])
def test_publishing_works_whatever_the_warehouse_file_is_called(tmp_path: Path, file_name: str) -> None:
    con = duckdb.connect(str(tmp_path / file_name))
    try:
        con.execute("CREATE SCHEMA marts")
        # Fully qualified: in a warehouse called `marts`, `marts.tiny` is ambiguous (catalog or schema).
        catalog = file_name.removesuffix(".duckdb")
        con.execute(
            f"CREATE TABLE \"{catalog}\".marts.tiny AS SELECT * FROM (VALUES (2, 'b'), (1, 'a')) AS t(k, v)"
        )
        result = publish_marts(con, tmp_path / "out", run_id="r1", marts=("tiny",), storage="v1.0.0")
    finally:
        con.close()
    assert result.row_counts == {"tiny": 2} and result.columns == {"tiny": 2}
    assert published_row_counts(result.database) == {"tiny": 2, "_published": 1}
    reader = duckdb.connect()
    try:
        rows = reader.execute(
            "SELECT k, v FROM read_parquet(?)", [str(result.parquet_files["tiny"])]
        ).fetchall()
        meta = reader.execute(
            "SELECT table_name, row_count, column_count, run_id, parquet_file FROM read_parquet(?)",
            [str(result.parquet_dir / "_published.parquet")],
        ).fetchall()
    finally:
        reader.close()
    assert rows == [(1, "a"), (2, "b")]  # ORDER BY ALL: the published order never depends on the build
    assert meta == [("tiny", 2, 2, "r1", "parquet/tiny.parquet")]


def test_a_mart_name_that_is_not_a_plain_identifier_is_refused(tmp_path: Path) -> None:
    con = duckdb.connect()
    with pytest.raises(PublishError, match="not a mart name"):
        publish_marts(con, tmp_path, marts=("tiny; DROP TABLE x",))
