-- The newest run's pulls, summed over sources and resource types: fetched = landed + rejected + duplicates.
WITH newest_run AS (
    SELECT run_id
    FROM raw.fetch_log
    ORDER BY finished_at DESC
    LIMIT 1
)
SELECT sum(fetched) AS fetched, sum(landed) AS landed, sum(new_versions) AS new_versions,
       sum(rejected) AS rejected, sum(duplicates) AS duplicates
FROM raw.fetch_log
WHERE run_id = (SELECT run_id FROM newest_run);
