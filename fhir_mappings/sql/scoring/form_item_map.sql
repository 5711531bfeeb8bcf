-- staging.form_item_map: one row per (source, cited questionnaire, linkId) mapped onto its instrument:
-- an item number, the embedded total, or an item the instrument ignores, and how it was mapped
-- (registered as `form_item_map_frame`).
CREATE OR REPLACE TABLE staging.form_item_map AS
SELECT source::VARCHAR AS source,
       questionnaire::VARCHAR AS questionnaire,
       instrument::VARCHAR AS instrument,
       link_id::VARCHAR AS link_id,
       role::VARCHAR AS role,                -- item | total | ignored
       item_number::INTEGER AS item_number,
       mapped_by::VARCHAR AS mapped_by       -- link_id | item_code | registry_link_id
FROM form_item_map_frame;
