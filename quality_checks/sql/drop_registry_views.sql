-- Drop what registry_views.sql created (the frames themselves are unregistered in Python).
DROP VIEW IF EXISTS qc_registry_instruments;
DROP VIEW IF EXISTS qc_registry_scales;
DROP VIEW IF EXISTS qc_registry_items;
