-- The spooled dataset of a suite evaluation (quality_checks/runner.py), dropped once its checks ran.
DROP TABLE IF EXISTS temp.main._qc_dataset;
