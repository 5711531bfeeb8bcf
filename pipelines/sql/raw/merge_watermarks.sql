-- Watermarks only move forward, as in the landing file itself.
INSERT INTO raw.watermarks SELECT * FROM land.raw.watermarks
ON CONFLICT (source, resource_type) DO UPDATE SET
    watermark = greatest(raw.watermarks.watermark, excluded.watermark),
    run_id = excluded.run_id, updated_at = excluded.updated_at;
