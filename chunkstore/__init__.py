"""chunkstore: a deduplicating store.

Files are cut into content-defined chunks (FastCDC), each chunk is named by its
BLAKE3 hash, compressed with zstd and stored once; a catalog keeps every file's
versions and recipe and every chunk's reference count.
"""

from .chunking import ChunkerSpec
from .compression import CompressionSpec
from .errors import ChunkstoreError
from .store import Store

__version__ = "0.1.0"
__all__ = ["ChunkerSpec", "ChunkstoreError", "CompressionSpec", "Store", "__version__"]
