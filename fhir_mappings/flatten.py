"""Flatten QuestionnaireResponses into one row per answer, set-based in DuckDB SQL.

The SQL lives in `fhir_mappings/sql/flatten_answers.sql`; this module feeds it the current version
of every response and writes `staging.questionnaire_answers`. No Python loop per response.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

SQL_DIR = Path(__file__).resolve().parent / "sql"

# The newest landed version of each response (amended versions supersede earlier ones; an
# entered-in-error version is itself the newest, and its status travels with the answers). A
# response whose newest version is a tombstone (`deleted`: the server deleted it) is left out.
CURRENT_RESPONSES = """
    SELECT source, id, version_id, resource, last_updated
    FROM raw.questionnaire_response
    QUALIFY row_number() OVER (
        PARTITION BY source, id
        ORDER BY last_updated DESC NULLS LAST, TRY_CAST(version_id AS BIGINT) DESC NULLS LAST, version_id DESC
    ) = 1 AND deleted IS NOT TRUE
"""

RESPONSE_COLUMNS = """
    SELECT source, id AS response_id, version_id,
           resource ->> 'status' AS status,
           resource ->> 'questionnaire' AS questionnaire,
           split_part(resource ->> 'questionnaire', '|', 1) AS questionnaire_url,
           nullif(split_part(resource ->> 'questionnaire', '|', 2), '') AS questionnaire_version,
           resource -> 'subject' ->> 'reference' AS subject_ref,
           resource -> 'encounter' ->> 'reference' AS encounter_ref,
           resource -> 'source' ->> 'reference' AS source_ref,
           resource -> 'author' ->> 'reference' AS author_ref,
           TRY_CAST(resource ->> 'authored' AS TIMESTAMPTZ) AS authored_at,
           last_updated
    FROM qr_input
"""


def flatten_sql() -> str:
    """The answer-flattening query over a relation named `qr_input`."""
    return (SQL_DIR / "flatten_answers.sql").read_text()


def chunk_size() -> int:
    """Responses flattened per statement: `ALLIANCE_QI_FLATTEN_CHUNK` (default 100,000).

    The recursive flatten holds its working set in memory, so a million responses in one statement
    does not fit under the warehouse's memory limit; chunks keep memory flat whatever the volume.
    """
    value = int(os.environ.get("ALLIANCE_QI_FLATTEN_CHUNK", "100000"))
    if value < 1:
        raise ValueError("ALLIANCE_QI_FLATTEN_CHUNK must be at least 1")
    return value


def build_questionnaire_answers(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """(Re)build `staging.questionnaire_responses` and `staging.questionnaire_answers`.

    Rebuilt whole from raw each time (CREATE OR REPLACE): running it twice gives the same tables.
    The answers are flattened in chunks of responses (by a hash of the id), so memory stays bounded.
    """
    con.execute("CREATE SCHEMA IF NOT EXISTS staging")
    # The current version of each response, as keys only (the window over raw is the costly part).
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE qr_keys AS
            SELECT source, id, version_id FROM ({CURRENT_RESPONSES})"""  # noqa: S608 - module constant
    )
    total = int(con.execute("SELECT count(*) FROM qr_keys").fetchall()[0][0])
    chunks = max(1, -(-total // chunk_size()))
    # `chunks` is an int computed here (views cannot take bound parameters).
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW qr_all AS
           SELECT r.source, r.id, r.version_id, r.resource, r.last_updated,
                  hash(r.source || '/' || r.id) % {int(chunks)} AS chunk
           FROM raw.questionnaire_response r JOIN qr_keys k USING (source, id, version_id)"""  # noqa: S608
    )
    con.execute("CREATE OR REPLACE TEMP VIEW qr_input AS SELECT * FROM qr_all")
    con.execute(f"CREATE OR REPLACE TABLE staging.questionnaire_responses AS {RESPONSE_COLUMNS}")
    # The SQL text is the project's own file, never data.
    answers_sql = f"""WITH answers AS ({flatten_sql()})
            SELECT r.source, r.response_id, r.version_id, r.status, r.questionnaire, r.questionnaire_url,
                   r.questionnaire_version, r.subject_ref, r.encounter_ref, r.source_ref, r.author_ref,
                   r.authored_at, a.* EXCLUDE (source, response_id, version_id)
            FROM answers a
            JOIN staging.questionnaire_responses r USING (source, response_id, version_id)"""  # noqa: S608
    try:
        for chunk in range(chunks):
            con.execute("DROP VIEW IF EXISTS qr_input")
            chunk_sql = f"SELECT * EXCLUDE (chunk) FROM qr_all WHERE chunk = {int(chunk)}"  # noqa: S608 - an int
            con.execute(f"CREATE OR REPLACE TEMP TABLE qr_input AS {chunk_sql}")
            if chunk == 0:
                con.execute(f"CREATE OR REPLACE TABLE staging.questionnaire_answers AS {answers_sql}")
            else:
                con.execute(f"INSERT INTO staging.questionnaire_answers {answers_sql}")
            con.execute("DROP TABLE qr_input")
    finally:
        for statement in (
            "DROP TABLE IF EXISTS qr_input",
            "DROP VIEW IF EXISTS qr_input",
            "DROP VIEW IF EXISTS qr_all",
            "DROP TABLE IF EXISTS qr_keys",
        ):
            try:
                con.execute(statement)
            except duckdb.CatalogException:
                pass  # a view where a table was expected (or the reverse): nothing to drop
    responses = con.execute("SELECT count(*) FROM staging.questionnaire_responses").fetchall()[0][0]
    answers = con.execute("SELECT count(*) FROM staging.questionnaire_answers").fetchall()[0][0]
    return {"responses": int(responses), "answers": int(answers), "chunks": chunks}
