-- The site view's work relations, also dropped after a failed build.
DROP VIEW IF EXISTS site_view_rows;
DROP TABLE IF EXISTS site_view_source;
