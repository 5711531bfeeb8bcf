-- One published table written as Parquet by DuckDB itself (no pyarrow).
COPY {{ table }} TO $path (FORMAT parquet);
