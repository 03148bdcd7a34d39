"""Questions across runs: entry selection, decoded tables, the Parquet/CSV dataset, SQL
(DuckDB) and run diff. pyarrow and duckdb (the ``analytics`` extra) are imported only inside
the functions that need them, never by ``import mmaplog``."""
