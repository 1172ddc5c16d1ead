"""`chunkstore gc`: free the chunks nothing references."""

from __future__ import annotations

import click

from ..exits import EXIT_OK
from ..options import size_option
from ..output import echo_json, human_bytes, with_requests
from ..progress import ProgressDisplay


@click.command()
@click.option("--dry-run", "-n", is_flag=True, help="Only report what would be freed.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@size_option(
    "--max-repack",
    help="Format 2 stores: rewrite at most BYTES of live chunks out of packs that are 30% dead or more, "
    "or small (e.g. 1G; 0 repacks nothing; default: no bound).",
)
@click.pass_obj
def gc(context, dry_run: bool, as_json: bool, max_repack: int | None) -> int:
    """Delete what no stored version references. Safe while puts run.

    `rm` and `forget` only drop references; gc is what gives the space back: chunk objects in a
    format 1 store, packs and recipe pages in a format 2 store (a pack goes once none of its
    chunks is named; see docs/design/format-v2.md).
    """
    store = context.open_store()
    with ProgressDisplay(context.show_progress and not as_json, counting="chunks deleted") as progress:
        try:
            report = store.gc(
                dry_run=dry_run,
                max_repack=max_repack,
                on_progress=lambda state: progress.update(
                    state.chunks_deleted, None, f"{human_bytes(state.bytes_freed)} freed"
                ),
            )
        finally:
            store.close()
    if as_json:
        echo_json(with_requests(report.to_json(), store))
    elif not context.quiet:
        verb = "would delete" if dry_run else "deleted"
        if report.packs_deleted is None:
            click.echo(
                f"{verb} {report.chunks_deleted} chunks and {report.orphans_deleted} orphaned objects, "
                f"freeing {human_bytes(report.bytes_freed)}"
            )
        else:
            click.echo(
                f"{verb} {report.packs_deleted} packs, {report.pages_deleted} recipe pages and "
                f"{report.orphans_deleted} orphaned packs, freeing {human_bytes(report.bytes_freed)} "
                f"(and {human_bytes(report.page_bytes_freed or 0)} of catalog)"
            )
            if report.packs_repacked:
                click.echo(
                    f"{'would rewrite' if dry_run else 'rewrote'} {report.packs_repacked} packs: "
                    f"{human_bytes(report.repack_bytes_read or 0)} read, "
                    f"{human_bytes(report.repack_bytes_written or 0)} written"
                )
    return EXIT_OK
