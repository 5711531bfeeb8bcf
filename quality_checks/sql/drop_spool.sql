-- The spooled dataset of a suite evaluation (quality_checks/runner.py), dropped once its checks ran,
-- with its batch spool when it was validated in batches.
DROP TABLE IF EXISTS temp.main._qc_batches;
DROP TABLE IF EXISTS temp.main._qc_dataset;
