"""Outputs: the published tables (Parquet and CSV), the results read back from them, and the run's provenance."""
