"""The DynamoDB catalog: one table that any number of writers on any number of machines share.

DynamoDB makes a conditional write atomic for one item, and TransactWriteItems for
at most 100 items (4 MB); there is nothing larger. The protocol of
chunkstore/backends/catalog.py is kept with those alone (the README's design section
gives the argument in full).

The modules, each using only those above it:
    items.py      keys, and records as items and back (pure; reading is defensive)
    table.py      the table client: requests, retries, back-off, table creation, the meta item
    sessions.py   session items, heartbeats, and whether a session is alive
    commits.py    writing contents and versions, and taking contents back (rollback, release)
    gc.py         the gc lock, collection of chunks, orphans
    packindex.py  the pack index of storage format 2 (schema 3 items)
    catalog.py    DynamoDBCatalog, the Catalog interface over the above

Items (pk, sk):
    meta           meta          schema version, the store it belongs to (ID and URL), name shards
    s              SESSION       a live session: kind, host, pid, heartbeat
    gclock         gclock        the gc lock: the session holding it
    c#CHUNK        c             a chunk: size, stored size, count (rc), state (st), generation
                                 (gen), the session that made it (own), the other sessions
                                 pinning it (pins), the gc deleting it (gcs)
    d#DIGEST       d             a content: size, entries, pages, count, state
                                 (committing / live / releasing), owner and cursor
    d#DIGEST       rNNNNNNNN     a recipe page (at most 147 KB: an item holds 400 KB)
    n#SHARD        NAME\\0VVVVVVVVVV a version; names are spread over a few partitions and
                                 listed by prefix with Query. A deletion marker (schema 2) is a
                                 version item with dm = true and no digest or stat
    m#SHARD        NAME          the last version number given to the name (never given twice)
    snap           ID            a snapshot (schema 2): time (t), host, paths (a list), the
                                 counts of what its put did, and what ran it (prog; an
                                 optional attribute, absent from older snapshots, read as "")
In a store that seals its metadata (config version 4, chunkstore/backends/sealed.py), NAME is
the sealed name, a session's host a keyed hash, and version and snapshot items carry the sealed
stat or snapshot fields in a binary attribute `x` (their clear attributes zero or empty); no
other store writes `x`.
A global secondary index on versions' digests finds a name that holds a content (deletion
markers have no digest, so the index leaves them out).

Schema versions (the meta item's schema): 1 has no deletion markers and no snapshots; 2
adds them; 3 adds the pack index of storage format 2 (items round, p#PACK, g#PAGE, h#CHUNK:
packindex.py). This chunkstore reads all three. A table is made at 2 and stays at 1 or 2 until
the first item of a newer schema is written, then moves to it in a conditional write just
before it, so a read-only user never writes, a format 1 store never leaves 2, and a chunkstore
that knows only older schemas refuses a table that has such items.

Chunks:
  * Pins are on the chunk's own item: the session that created the row (`own`, for the
    life of that generation of the row) and the set of other sessions that rely on it
    (`pins`). So pinning and gc's move to DELETING (conditional on no pins, a count of 0
    and the generation gc read, whose owner it found dead) exclude each other
    atomically: a pin succeeds only while the chunk is not DELETING, and gc's move only
    while nothing pins it.
  * Counts grow only in transactions whose increments are conditional on the chunk
    being PRESENT, so a committed recipe only names chunks that are PRESENT with a
    count above 0, and gc only takes chunks whose count is 0.
  * PRESENT is set only from PENDING and only by a writer that saw that same
    generation of the row before uploading, so a stalled writer cannot mark a row
    that gc deleted and another writer made again.
  * Only the gc named on a DELETING row deletes its object, and DELETING is never undone.

Contents larger than one transaction are committed in steps (commits.py): a content
item in the "committing" state owned by the session, the recipe pages, the increments
in transactions of 99 chunks that also advance a cursor on the content item, and last
the version, written together with the content turning "live" (the commit point). A
crash leaves a committing content whose cursor says exactly which increments were
applied; gc (or a writer that needs the same content) rolls it back through the same
cursor. Removing the last version of a content turns it "releasing" in the same
transaction, and the decrements follow through the cursor.
"""

from chunkstore.backends.dynamodb.catalog import DynamoDBCatalog
from chunkstore.backends.dynamodb.table import DIGEST_INDEX, validate_table

__all__ = ["DIGEST_INDEX", "DynamoDBCatalog", "validate_table"]
