"""How `ingest` and `scan --import-into` print each object they put into a store."""

from __future__ import annotations

import click

from .output import printable, warn


class ResultPrinter:
    """Prints each ingest result as the chosen log format says; counts what failed."""

    def __init__(self, context, log_format: str):
        from chunkstore.apps.ingest.observe import Observer

        self.quiet = context.quiet
        self.observer = Observer(metrics=False) if log_format == "json" else None
        self.failed = 0
        self.counts: dict[str, int] = {}

    def __call__(self, result) -> None:
        self.counts[result.outcome] = self.counts.get(result.outcome, 0) + 1
        if result.outcome in ("error", "retry"):
            self.failed += 1
        if self.observer is not None:
            self.observer.result(result)
        elif result.outcome == "error":
            warn(f"{printable(result.key)}: {result.error}")
        elif not self.quiet:
            duplicate = f" (duplicate of {printable(result.duplicate_of)})" if result.duplicate_of else ""
            click.echo(f"{printable(result.key)}: {result.message}{duplicate}")

    def summary(self) -> str:
        return ", ".join(f"{count} {outcome}" for outcome, count in sorted(self.counts.items())) or "no objects"
