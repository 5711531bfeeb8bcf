-- Responses per reason in a table of responses left out of scoring (unmapped or excluded).
SELECT reason, count(*) AS responses
FROM {{ table }}
GROUP BY ALL
ORDER BY 2 DESC;
