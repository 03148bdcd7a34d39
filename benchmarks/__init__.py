"""Benchmarks for mmaplog, measured side by side with its peers (SQLite, LMDB)."""
