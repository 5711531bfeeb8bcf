-- The confidence level of the report's intervals (e.g. 0.95): report_alliance_trajectory's row over all
-- sessions (no row when the mart is empty; the report then says 95).
SELECT ci_level
FROM {{ schema }}.report_alliance_trajectory
WHERE level = 'all';
