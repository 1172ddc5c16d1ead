"""`chunkstore init`: create a store."""

from __future__ import annotations

import click

from chunkstore.store import DEFAULT_STORAGE_FORMAT, STORAGE_FORMATS

from ..exits import EXIT_OK
from ..options import size_option
from ..output import printable
from ..secrets import read_secret_file


@click.command()
@click.option(
    "--chunker",
    default="fastcdc2020",
    show_default=True,
    type=click.Choice(["fastcdc2020", "fastcdc-ronomon", "fixed"]),
    help="How files are cut into chunks. fastcdc2020 (pyfastcdc) is content-defined and fastest; "
    "fixed cuts every --avg-size bytes and is only useful for comparison.",
)
@size_option(
    "--avg-size",
    help="Target average chunk size (min is a quarter, max four times). Smaller chunks "
    "find more duplicates; larger ones mean fewer objects (and requests on S3). "
    "[default: 8K; 64K with --format 1, which stores each chunk as an object of its own]",
)
@click.option(
    "--compression",
    default="zstd:3",
    show_default=True,
    metavar="zstd:LEVEL|none",
    help="Compression of each chunk; a chunk that does not shrink is stored raw.",
)
@click.option(
    "--format",
    "storage_format",
    default=str(DEFAULT_STORAGE_FORMAT),
    show_default=True,
    type=click.Choice([str(storage_format) for storage_format in STORAGE_FORMATS]),
    help="Storage format. 2: chunks in 16 MiB packs and recipes as pages (docs/design/format-v2.md), "
    "so small chunks (8K) cost few objects and requests. 1: one object (and one catalog row) per "
    "chunk, as stores made before format 2 were.",
)
@size_option(
    "--dictionary-size",
    help="--format 2 with zstd: the size of the store's zstd dictionary, trained by the first put "
    "on its first --dictionary-training bytes of new chunks; 0 for none. 112K stored 1.15-1.16x "
    "less than none on source releases and a database (docs/performance.md). [default: 112K]",
)
@size_option(
    "--dictionary-training",
    default="16M",
    show_default=True,
    help="--format 2 with zstd: the bytes of new chunks the store's dictionary is trained on.",
)
@click.option(
    "--table",
    metavar="TABLE",
    help="s3:// stores only: the DynamoDB table that holds the store's catalog (required for them).",
)
@click.option(
    "--create",
    is_flag=True,
    help="s3:// stores only: make the bucket (private, encrypted) and the table (on-demand) if absent.",
)
@click.option(
    "--encrypt",
    is_flag=True,
    help="Encrypt chunks and key their IDs and boundaries; with storage format 2, encrypt names, "
    "paths, host names and file attributes in the catalog too. The passphrase comes from "
    "$CHUNKSTORE_PASSPHRASE, --key-file, or a prompt; without it nothing can be read.",
)
@click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False),
    metavar="PATH",
    help="With --encrypt: use the contents of PATH as the secret instead of a passphrase "
    "(give it later with --passphrase-file PATH).",
)
@click.pass_obj
def init(
    context,
    chunker: str,
    avg_size: int | None,
    compression: str,
    storage_format: str,
    dictionary_size: int | None,
    dictionary_training: int,
    table: str | None,
    create: bool,
    encrypt: bool,
    key_file: str | None,
) -> int:
    """Create an empty store. Its chunking, compression and storage format are fixed from then on.

    An s3://BUCKET/PREFIX store keeps its chunks in S3 and its catalog in the
    DynamoDB table given with --table; credentials, region and endpoints come
    from the usual AWS settings (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL...).
    Exits 1 if a store already exists there.

    \b
    Examples:
      chunkstore --store ~/backups init --avg-size 1M
      chunkstore --store ~/backups init --format 1     # an object per chunk, as before format 2
      chunkstore --store s3://bucket/store init --table store-catalog --create --encrypt
    """
    from chunkstore import ChunkerSpec, CompressionSpec, Store
    from chunkstore.core.chunking import default_avg_size

    on_s3 = context.store_url.startswith("s3://")
    if on_s3 and not table:
        raise click.UsageError("an s3:// store needs --table TABLE (the DynamoDB table of its catalog)")
    if not on_s3 and (table or create):
        raise click.UsageError("--table and --create apply only to s3:// stores")
    if key_file and not encrypt:
        raise click.UsageError("--key-file goes with --encrypt")
    if avg_size is None:
        avg_size = default_avg_size(int(storage_format))
    spec = ChunkerSpec.from_average(chunker, avg_size)
    passphrase = None
    if encrypt:
        passphrase = (
            read_secret_file(key_file)
            if key_file
            else context.given_passphrase() or context.prompt_passphrase("New passphrase", confirm=True)
        )
    store = Store.init(
        context.store_url,
        spec,
        CompressionSpec.parse(compression),
        table=table,
        create=create,
        passphrase=passphrase,
        concurrency=context.concurrency,
        storage_format=int(storage_format),
        dictionary_size=dictionary_size,
        training_bytes=dictionary_training,
    )
    store.close()
    if not context.quiet:
        catalog = f", catalog in DynamoDB table {table}" if on_s3 else ""
        layout = ", storage format 2" if storage_format == "2" else ""
        click.echo(
            f"created store at {printable(context.store_url)} "
            f"(chunker {spec.name} {spec.min_size}/{spec.avg_size}/{spec.max_size}, "
            f"compression {store.config.compression}{layout}{catalog}{', encrypted' if encrypt else ''})"
        )
    return EXIT_OK
