"""Flatten QuestionnaireResponses into one row per answer, set-based in DuckDB SQL.

The answers are declared as a SQL-on-FHIR v2 ViewDefinition,
`fhir_mappings/views/definitions/questionnaire_answers.json` (any depth through
`repeat: [item, answer.item]`), compiled to DuckDB SQL at run time (`fhir_mappings/views/`). The
SQL around it lives in `fhir_mappings/sql/answers/`: `current_responses.sql` picks the current version
of every response (the shared `current_version` macro), `questionnaire_responses.sql` writes one row
per response, `response_chunk.sql` takes one chunk of responses (by a hash of the id) for the
compiled view to read, and `questionnaire_answers.sql` types the view's columns into
`staging.questionnaire_answers`. No Python loop per response: Python only counts the chunks.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from fhir_mappings.views import build_view, definition_fingerprint, load_view_definition
from fhir_mappings.views.sql import quote_identifier
from pipelines.sqlfiles import count_rows, install_shared_macros, run_sql
from pipelines.warehouse import large_step_memory_limit, stage_memory_limit

SQL_DIR = Path(__file__).resolve().parent / "sql" / "answers"
ANSWERS_VIEW = Path(__file__).resolve().parent / "views" / "definitions" / "questionnaire_answers.json"
RESPONSE_CHUNK_SQL = SQL_DIR / "response_chunk.sql"
CURRENT_RESPONSES_SQL = SQL_DIR / "current_responses.sql"
RESPONSES_SQL = SQL_DIR / "questionnaire_responses.sql"
CREATE_ANSWERS_SQL = SQL_DIR / "create_questionnaire_answers.sql"
ANSWERS_SQL = SQL_DIR / "questionnaire_answers.sql"
DROP_WORK_TABLES_SQL = SQL_DIR / "drop_work_tables.sql"


def chunk_size() -> int:
    """Responses flattened per statement: `ALLIANCE_QI_FLATTEN_CHUNK` (default 100,000).

    The recursive flatten holds its working set in memory, so a million responses in one statement
    does not fit under the warehouse's memory limit; chunks keep memory flat whatever the volume.
    """
    value = int(os.environ.get("ALLIANCE_QI_FLATTEN_CHUNK", "100000"))
    if value < 1:
        raise ValueError("ALLIANCE_QI_FLATTEN_CHUNK must be at least 1")
    return value


def answers_view_sql() -> str:
    """The answers ViewDefinition compiled over `response_chunk`, carrying each response's key."""
    view = load_view_definition(ANSWERS_VIEW)
    return build_view(view, source_relation="response_chunk", carry=("source", "id", "version_id")).sql


def answers_view_fingerprint() -> str:
    """The answers ViewDefinition's meaning, for the step's rebuild fingerprint: a changed view changes
    the answers, so it must rebuild them even when no response changed."""
    return definition_fingerprint(load_view_definition(ANSWERS_VIEW))


def build_questionnaire_answers(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """(Re)build `staging.questionnaire_responses` and `staging.questionnaire_answers`.

    Rebuilt whole from raw each time (CREATE OR REPLACE): running it twice gives the same tables.
    The answers are flattened in chunks of responses (by a hash of the id), so memory stays bounded.
    """
    install_shared_macros(con)
    try:
        run_sql(con, CURRENT_RESPONSES_SQL)
        total = count_rows(con, "current_response_versions")
        chunks = max(1, -(-total // chunk_size()))
        run_sql(con, RESPONSES_SQL)
        run_sql(con, CREATE_ANSWERS_SQL)
        view_sql = answers_view_sql()
        with stage_memory_limit(con, large_step_memory_limit()):
            _flatten_chunks(con, chunks, view_sql)
    finally:
        run_sql(con, DROP_WORK_TABLES_SQL)
    return {
        "responses": count_rows(con, "staging.questionnaire_responses"),
        "answers": count_rows(con, "staging.questionnaire_answers"),
        "chunks": chunks,
    }


def _flatten_chunks(con: duckdb.DuckDBPyConnection, chunks: int, view_sql: str) -> None:
    """The answers of every chunk of current responses, chunk by chunk."""
    for chunk in range(chunks):
        run_sql(con, RESPONSE_CHUNK_SQL, params={"chunks": chunks, "chunk": chunk})
        # SQL the compiler generated from the shipped view: names quoted, values as literals
        con.execute(f"CREATE OR REPLACE TEMP VIEW {quote_identifier('answer_rows')} AS {view_sql}")
        run_sql(con, ANSWERS_SQL)
