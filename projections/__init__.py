"""What is remembered and queried: DuckDB schema and projection runners."""
