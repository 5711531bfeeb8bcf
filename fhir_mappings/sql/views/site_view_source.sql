-- The resources a site view reads: the current version of each resource of one raw table ($raw_table,
-- a declared raw table name), as the (source, id, resource) relation the compiled view selects from.
-- fhir_mappings/views/site.py runs this file, then the compiled view, then site_view_table.sql.
CREATE SCHEMA IF NOT EXISTS staging;

CREATE OR REPLACE TEMP TABLE site_view_source AS
SELECT source, id, resource
FROM current_version($raw_table);
