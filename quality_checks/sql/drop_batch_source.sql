-- The view the batch spool was built from (quality_checks/runner.py _Data.partition).
DROP VIEW IF EXISTS _qc_batch_source;
