-- Rejected resources by type and reason (the reason's first clause), most frequent first.
SELECT coalesce(resource_type, '(unparseable)') AS resource_type,
       split_part(reason, ':', 1) AS reason,
       count(*) AS rejected
FROM raw.rejected
GROUP BY ALL
ORDER BY 3 DESC, 1;
