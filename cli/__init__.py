"""The chunkstore command line: a thin layer over the chunkstore library."""
