-- Work table _qi_quarantined, empty: the quality checks have not run on this warehouse yet.
CREATE OR REPLACE TEMP TABLE _qi_quarantined (source VARCHAR, response_id VARCHAR);
