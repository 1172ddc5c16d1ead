"""Benchmarks for chunkstore: deterministic datasets, side-by-side runs with restic and borg
(`python -m benchmarks.foundation`) and in-memory stage measurements (`python -m benchmarks.micro`)."""
