"""Benchmarks for chunkstore: the whole suite (`python -m benchmarks`), deterministic datasets,
side-by-side runs with restic and borg (`python -m benchmarks.foundation`) and in-memory stage
measurements (`python -m benchmarks.micro`)."""
