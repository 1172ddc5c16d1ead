"""What verify finds: problems, each naming the files it affects, and the totals it checked."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from chunkstore.backends.catalog import ContentRecord


@dataclass
class Problem:
    # missing-object, corrupt-object, missing-chunk-row, missing-pack-item, refcount, missing-content,
    # corrupt-recipe, damaged-catalog
    kind: str
    message: str
    names: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"kind": self.kind, "message": self.message, "names": self.names}


@dataclass
class VerifyReport:
    problems: list[Problem] = field(default_factory=list)
    versions: int = 0
    contents: int = 0
    chunks: int = 0
    chunks_read: int = 0
    bytes_read: int = 0
    counts_repaired: int = 0  # chunk reference counts verify --repair rewrote
    content_counts_repaired: int = 0  # contents' counts of versions verify --repair rewrote
    pack_items_rebuilt: int | None = None  # format 2: pack items verify --repair rebuilt from the packs
    # Storage format 2 only (None in a format 1 store): the packs and the recipe page items that
    # the stored contents name.
    packs: int | None = None
    pages: int | None = None
    # What repair needs from the check: each chunk's count in the catalog and in the recipes,
    # and whether every recipe could be read (if not, the recount misses some references).
    recorded_counts: dict[bytes, int] = field(default_factory=dict, repr=False)
    recount: Counter = field(default_factory=Counter, repr=False)
    recount_complete: bool = True
    # And each content's versions (its count recomputed), and the contents whose recipe could
    # not be read (repair does not release one: what it holds is unknown).
    content_users: dict[bytes, int] = field(default_factory=dict, repr=False)
    unreadable_recipes: set[bytes] = field(default_factory=set, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    def check_content(self, content: ContentRecord, names: list[str]) -> None:
        """Count a stored content, and report it if its count of versions is not the versions
        that name it."""
        self.contents += 1
        self.content_users[content.digest] = len(names)
        if content.refcount != len(names):
            self.problems.append(
                Problem(
                    "refcount",
                    f"content {content.digest.hex()} counts {content.refcount} versions, {len(names)} reference it",
                    names,
                )
            )

    def check_versions_have_contents(self, names_by_digest: dict[bytes, list[str]], contents_seen: set[bytes]) -> None:
        """Report each content that versions name and the catalog does not hold."""
        for digest, names in names_by_digest.items():
            if digest not in contents_seen:
                self.problems.append(
                    Problem("missing-content", f"content {digest.hex()} of the version is missing", sorted(names))
                )
                self.recount_complete = False

    @property
    def damaged_names(self) -> list[str]:
        return sorted({name for problem in self.problems for name in problem.names})

    def to_json(self) -> dict:
        figures: dict[str, object] = {
            "ok": self.ok,
            "versions": self.versions,
            "contents": self.contents,
            "chunks": self.chunks,
            "chunks_read": self.chunks_read,
            "bytes_read": self.bytes_read,
            "counts_repaired": self.counts_repaired,
            "content_counts_repaired": self.content_counts_repaired,
        }
        if self.packs is not None:
            figures["packs"] = self.packs
            figures["pages"] = self.pages
        if self.pack_items_rebuilt is not None:
            figures["pack_items_rebuilt"] = self.pack_items_rebuilt
        return {
            **figures,
            "damaged_names": self.damaged_names,
            "problems": [problem.to_json() for problem in self.problems],
        }
