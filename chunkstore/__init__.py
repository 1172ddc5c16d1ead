"""chunkstore: a deduplicating store.

Files are cut into content-defined chunks (FastCDC), each chunk is named by its
BLAKE3 hash, compressed with zstd and stored once; a catalog keeps every file's
versions and recipe and every chunk's reference count.
"""

from chunkstore.core.chunking import ChunkerSpec
from chunkstore.core.compression import CompressionSpec
from chunkstore.errors import ChunkstoreError
from chunkstore.store import Store

__version__ = "0.1.0"
__all__ = ["ChunkerSpec", "ChunkstoreError", "CompressionSpec", "Store", "__version__"]
