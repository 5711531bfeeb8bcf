-- Write rows computed in Python (marts/frames.py write_table) to a declared table: One row per computed
-- row. `rows` is a registered relation whose columns already carry the table's declared types.
CREATE OR REPLACE TABLE {{ table }} AS
SELECT * FROM {{ rows }};
