-- One mart copied into the published file. ORDER BY ALL: the same marts always give the same
-- published rows (idempotent publish).
CREATE TABLE {{ published }} AS
SELECT *
FROM {{ mart }}
ORDER BY ALL;
