-- The instrument registry as lookup views for suite SQL (quality_checks/params.py registers the three
-- pandas frames `_qc_registry_*_df` on the connection first). Temporary: gone with the connection.
CREATE OR REPLACE TEMP VIEW qc_registry_instruments AS
SELECT * FROM _qc_registry_instruments_df;

CREATE OR REPLACE TEMP VIEW qc_registry_scales AS
SELECT * FROM _qc_registry_scales_df;

-- Cast list columns explicitly: pandas hands DuckDB Python lists as generic objects.
CREATE OR REPLACE TEMP VIEW qc_registry_items AS
SELECT instrument,
       item_number::INTEGER AS item_number,
       link_ids::VARCHAR[] AS link_ids,
       codes::VARCHAR[] AS codes,
       item_min::DOUBLE AS item_min,
       item_max::DOUBLE AS item_max
FROM _qc_registry_items_df;
