-- A batched dataset (quality_checks/runner.py _Data.partition): the spool's needed columns with each
-- row's position (_row) and batch number (_batch), sorted by batch so that each batch's filter reads
-- only its own row groups.
CREATE OR REPLACE TEMP TABLE _qc_batches AS
SELECT * FROM _qc_batch_source ORDER BY _batch, _row
