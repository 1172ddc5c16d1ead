"""SQLite catalog files as older chunkstores made them, from a file of today's schema."""

from __future__ import annotations


def as_schema_4(db) -> None:
    """Drop what schema 5 added (the sealed fields of versions and snapshots)."""
    db.execute("ALTER TABLE versions DROP COLUMN sealed")
    db.execute("ALTER TABLE snapshots DROP COLUMN sealed")
