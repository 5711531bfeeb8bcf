-- Work table mart_medication_map: One row per medication code (system + code) of the declared mapping
-- marts/reference/medications.yaml, with its ingredient and class. The lists are bound parameters of
-- equal length (marts/adherence.py reads the file); read by pdc.sql.
CREATE OR REPLACE TEMP TABLE mart_medication_map AS
SELECT unnest($systems::VARCHAR[]) AS system, unnest($codes::VARCHAR[]) AS code,
       unnest($ingredients::VARCHAR[]) AS ingredient, unnest($classes::VARCHAR[]) AS drug_class;
