-- The quality schema (quality_checks/store.py runs this before the tables and views).
CREATE SCHEMA IF NOT EXISTS quality;
