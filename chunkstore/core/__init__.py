"""The core: pure functions and formats, with no I/O of their own.

chunking.py      content-defined chunkers (FastCDC) and their specs
hashing.py       chunk IDs and whole-file digests (BLAKE3, keyed when encrypted)
compression.py   zstd and its stored IDs
crypto.py        keys, wrapping, per-object AEAD
objectformat.py  the stored chunk object: header, compression, sealing
recipes.py       recipe pages: a content's ordered chunk list
names.py         the rules for stored names
config.py        the store's config: every parameter that shapes stored data
"""
