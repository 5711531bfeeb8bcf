-- One mart's row of _published (run once per mart, values bound).
INSERT INTO {{ metadata }} (
    table_name, row_count, column_count, built_at, run_id, source_warehouse, pipeline_version,
    pseudonyms, storage_version, parquet_file
) VALUES (
    $table_name, $row_count, $column_count, $built_at, $run_id, $source_warehouse, $pipeline_version,
    $pseudonyms, $storage_version, $parquet_file
);
