"""sqlite-pg-sync: keep PostgreSQL in step with a SQLite file, one Dagster asset per table."""
