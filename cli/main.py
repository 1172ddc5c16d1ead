"""The `chunkstore` command: the global options, the registration of every command, and
the entry point that turns what ends a command into its exit code (cli/exits.py).

Exit codes: 0 success, 1 other error, 2 usage, 3 not found, 4 integrity error,
5 wrong key or passphrase (see chunkstore/errors.py).
"""

from __future__ import annotations

import ctypes
import os
import sys

import click

from chunkstore import __version__

from . import exits
from .commands.gc import gc
from .commands.get import get, restore
from .commands.history import diff, forget, snapshots
from .commands.ingest import ingest
from .commands.init import init
from .commands.key import key
from .commands.ls import list_command
from .commands.migrate import migrate
from .commands.put import put
from .commands.rm import rm
from .commands.scan import scan
from .commands.serve import serve, serve_token
from .commands.stats import stats
from .commands.verify import verify
from .context import Context, default_store_url
from .options import CONCURRENCY
from .secrets import PASSPHRASE_VARIABLE


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--store",
    "store_url",
    metavar="URL",
    default=None,
    help="The store: a folder path (or file://PATH), or s3://BUCKET/PREFIX. Default: $CHUNKSTORE_STORE, "
    "else a folder in your user data directory.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print only errors (and what a command exists to print).")
@click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False),
    metavar="PATH",
    help=f"Read an encrypted store's passphrase (or key file) from PATH. Default: ${PASSPHRASE_VARIABLE}, "
    "else a prompt on the terminal.",
)
@click.option(
    "--concurrency",
    type=CONCURRENCY,
    envvar="CHUNKSTORE_CONCURRENCY",
    metavar="N",
    help="Chunk requests kept in flight (threads). Default: 32 for s3:// stores, one per core "
    "for a folder. Also $CHUNKSTORE_CONCURRENCY.",
)
@click.version_option(__version__, prog_name="chunkstore")
@click.pass_context
def cli(
    click_context: click.Context,
    store_url: str | None,
    quiet: bool,
    passphrase_file: str | None,
    concurrency: int | None,
) -> None:
    """chunkstore: a deduplicating store for many versions of big, similar files.

    Files are cut into content-defined chunks (FastCDC), each chunk is named by its
    BLAKE3 hash, compressed with zstd and stored once. Start with `chunkstore init`,
    then `put` files and folders, and `get` or `restore` them byte for byte.

    Exit codes: 0 success, 1 error, 2 usage, 3 not found, 4 integrity error
    (corrupt, missing or mismatched data), 5 wrong key or passphrase.

    \b
    Example:
      export CHUNKSTORE_STORE=~/backups
      chunkstore init && chunkstore put ~/projects && chunkstore ls projects
    """
    click_context.obj = Context(store_url or default_store_url(), quiet, passphrase_file, concurrency)


for command in (
    init,
    put,
    get,
    restore,
    list_command,
    rm,
    gc,
    verify,
    stats,
    snapshots,
    diff,
    forget,
    key,
    serve,
    serve_token,
    ingest,
    scan,
    migrate,
):
    cli.add_command(command)


# glibc gives each thread that allocates a malloc arena of its own (up to 8 per core), and each
# arena keeps what was freed in it. In a chunkstore command most allocations happen under the
# interpreter lock, so more arenas buy no parallelism, only memory: capped at two, the peak RSS of
# a restore of the 10 Django sdists fell from 143-153 to 135-138 MiB and that of their put from
# 120-121 to 105-107 MiB, at the same speed (docs/performance.md, "Malloc arenas"). A
# MALLOC_ARENA_MAX the user set is left as it is.
_M_ARENA_MAX = -8  # from glibc's malloc.h
MALLOC_ARENAS = 2


def limit_malloc_arenas() -> bool:
    """Cap this process's glibc malloc arenas at MALLOC_ARENAS, before any thread starts; False
    where MALLOC_ARENA_MAX is set or the C library takes no such setting."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, MALLOC_ARENAS))


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return (and exit with) its exit code. Run as the program (argv None),
    it caps the malloc arenas first; called with arguments (tests, embedding), it leaves the
    process's allocator alone."""
    if argv is None:
        limit_malloc_arenas()
    try:
        # Outside standalone mode click returns the command's return value (our commands
        # return their exit code) or, after --help and --version, the Exit code.
        result = cli.main(args=argv, prog_name="chunkstore", standalone_mode=False)
        code = result if isinstance(result, int) else exits.EXIT_OK
    except (Exception, KeyboardInterrupt) as error:
        code = exits.report(error)
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
