-- ops.build_state: the inputs each derived step was last built from (pipelines/build_state.py).
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS ops.build_state (
    step VARCHAR PRIMARY KEY,       -- e.g. 'staging.questionnaire_answers'
    fingerprint VARCHAR NOT NULL,   -- hash of the inputs' state when the step last ran
    inputs JSON NOT NULL,           -- the inputs' state itself, for humans
    run_id VARCHAR NOT NULL,
    built_at TIMESTAMPTZ NOT NULL
);
