"""`chunkstore stats`: sizes, ratios and, on AWS, requests and costs."""

from __future__ import annotations

import click

from ..exits import EXIT_OK
from ..output import echo_json, human_bytes, print_fields


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
def stats(context, as_json: bool) -> int:
    """Show sizes and ratios: logical (all versions), unique (distinct chunks) and stored bytes.

    For an s3:// store, also the requests this command made and what the store
    costs at AWS list prices (storage, and requests per GB put and restored).
    """
    from chunkstore.backends.aws import cost_estimate

    store = context.open_store(read_only=True)
    try:
        figures = store.stats()
        requests = store.request_counts()
    finally:
        store.close()
    if requests is not None:
        figures["requests"] = requests
        figures["cost_estimate"] = cost_estimate(figures)
    if as_json:
        echo_json(figures)
        return EXIT_OK

    def ratio(key: str) -> str:
        return "n/a" if figures[key] is None else f"{figures[key]:.2f}x"

    fields = [
        ("store", figures["store"]),
        ("files", f"{figures['files']} ({figures['versions']} versions, {figures['chunks']} chunks)"),
        ("logical", human_bytes(figures["logical_bytes"])),
        ("unique", f"{human_bytes(figures['unique_bytes'])}  (dedup {ratio('dedup_ratio')})"),
        (
            "stored",
            f"{human_bytes(figures['stored_bytes'])}  (compression {ratio('compression_ratio')}, "
            f"overall {ratio('store_ratio')})",
        ),
    ]
    if "packs" in figures:
        sizes = figures["packs_by_size"]
        classes = (
            f"{sizes['under_4mib']['packs']} under 4 MiB, {sizes['4mib_to_16mib']['packs']} of 4-16 MiB, "
            f"{sizes['16mib_and_over']['packs']} of 16 MiB or more"
        )
        pages = f"{figures['pages']} recipe pages, {figures['inline_pages']} inline"
        fields.append(("packs", f"{figures['packs']} ({classes}); {pages}"))
        fields.append(("dictionaries", f"{figures['dictionaries']} ({human_bytes(figures['dictionary_bytes'])})"))
    if requests is not None:
        cost = figures["cost_estimate"]
        objects = "pack" if "packs" in figures else "chunk"
        fields += [
            (
                "cost",
                f"${cost['storage_usd_per_month']:.4f}/month stored; per GB: "
                f"${cost['ingest_usd_per_gb_new_data']:.6f} to put new data, ${cost['restore_usd_per_gb']:.6f} "
                f"to restore ({cost['chunk_objects_per_gb']:,} {objects} objects/GB; {cost['prices']['source']})",
            ),
            (
                "requests",
                f"{sum(requests['s3'].values())} S3, {sum(requests['dynamodb'].values())} DynamoDB (by this command)",
            ),
        ]
    print_fields(fields)
    return EXIT_OK
