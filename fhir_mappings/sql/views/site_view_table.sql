-- A site view's staging table: the rows of the compiled ViewDefinition (the temp view site_view_rows,
-- over site_view_source), written whole each time, so a rerun gives the same table.
CREATE OR REPLACE TABLE {{ table }} AS
SELECT * FROM site_view_rows;
