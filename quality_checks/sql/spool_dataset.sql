-- The head of the statement that spools one dataset (quality_checks/runner.py): the runner appends the
-- dataset's own query (from its suite file, tables rendered from declarations, values bound), so the
-- rows keep the query's order and rowid is each row's position.
CREATE OR REPLACE TEMP TABLE _qc_dataset AS
