-- Every row of one published mart, the dataset of its generated suite (quality_checks/suite.py): the
-- mart is named by the marts suite file (a declaration), never by data.
SELECT * FROM {{ mart }};
