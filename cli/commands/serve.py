"""`chunkstore serve`: the HTTP API and web page; `chunkstore serve-token`: make a token."""

from __future__ import annotations

import os
import socket

import click

from ..exits import EXIT_OK
from ..options import CONCURRENCY, size_option
from ..output import printable


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback needs tokens (--tokens-file or $CHUNKSTORE_TOKENS) "
    "or --allow-no-token.",
)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option(
    "--tokens-file",
    type=click.Path(exists=True, dir_okay=False),
    metavar="PATH",
    help="Bearer tokens, one 'sha256:<hex> rw|ro NAME' line each (make them with `chunkstore serve-token`).",
)
@size_option("--max-upload-size", default="64G", show_default=True, help="Refuse uploads larger than this (413).")
@click.option(
    "--max-concurrent-uploads",
    default=4,
    show_default=True,
    type=CONCURRENCY,
    help="Uploads processed at once; more wait their turn.",
)
@click.option(
    "--certfile",
    type=click.Path(exists=True, dir_okay=False),
    metavar="PEM",
    help="Serve HTTPS with this certificate (chain); needs --keyfile.",
)
@click.option(
    "--keyfile", type=click.Path(exists=True, dir_okay=False), metavar="PEM", help="The private key of --certfile."
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="Allow browser pages from ORIGIN to call the API (repeatable). Default: no cross-origin access.",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="HOST[:PORT]",
    help="Also answer requests whose Host header names HOST (any port, or only PORT; IPv6 in brackets). "
    "Repeatable. Default: only localhost, 127.0.0.1, [::1] and the address a request arrived on; "
    "other names get 421 (against DNS rebinding). Give the names clients or a proxy use.",
)
@click.option(
    "--allow-no-token",
    is_flag=True,
    help="Listen beyond loopback without tokens, giving everyone who can reach the server full access. "
    "Only behind something that already keeps others out (a firewall, an authenticating proxy).",
)
@click.pass_obj
def serve(
    context,
    host: str,
    port: int,
    tokens_file: str | None,
    max_upload_size: int,
    max_concurrent_uploads: int,
    certfile: str | None,
    keyfile: str | None,
    cors_origins: tuple[str, ...],
    allowed_hosts: tuple[str, ...],
    allow_no_token: bool,
) -> int:
    """Serve the HTTP API (OpenAPI at /docs) and the upload page over the store.

    Clients authenticate with `Authorization: Bearer TOKEN`. Without tokens every
    request has read-write access, so the server then refuses to listen beyond
    loopback unless --allow-no-token is given. Requests are answered only for the
    Host names it was started for: localhost names, the address they arrived on,
    and each --allowed-host.
    """
    try:
        import uvicorn

        from chunkstore.apps.server import ServerSettings, TokenSet, create_app
        from chunkstore.apps.server.auth import TOKENS_VARIABLE
        from chunkstore.apps.server.serving import check_listen_address, is_loopback, uvicorn_config
    except ImportError as error:
        raise click.ClickException(f"serve needs the serve extra (pip install 'chunkstore[serve]'): {error}") from None

    if bool(certfile) != bool(keyfile):
        raise click.UsageError("--certfile and --keyfile go together")
    tokens = TokenSet.load(tokens_file, os.environ.get(TOKENS_VARIABLE))
    settings = ServerSettings(
        tokens=tokens,
        max_upload_bytes=max_upload_size,
        max_concurrent_uploads=max_concurrent_uploads,
        cors_origins=cors_origins,
        allowed_hosts=allowed_hosts,
        allow_no_token=allow_no_token,
    )
    check_listen_address(host, settings)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        # Listening before the address is announced: connections made as soon as it is
        # printed wait in the backlog until the server accepts them.
        listener.listen(2048)
    except OSError as error:
        listener.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {error.strerror}") from None
    store = context.open_store()
    try:
        config = uvicorn_config(create_app(store, settings), settings, ssl_certfile=certfile, ssl_keyfile=keyfile)
        scheme = "https" if certfile else "http"
        bound_host, bound_port = listener.getsockname()[:2]
        shown = f"[{bound_host}]" if family == socket.AF_INET6 else bound_host
        if tokens:
            auth = f"{len(tokens)} token(s)"
        elif is_loopback(host):
            auth = "no tokens: loopback only, full access"
        else:
            auth = "no tokens: full access for anyone who can reach it"
        # The address is printed even with --quiet: with --port 0 it is how callers learn the port.
        click.echo(
            f"chunkstore: serving {printable(context.store_url)} on {scheme}://{shown}:{bound_port}/ ({auth})", err=True
        )
        uvicorn.Server(config).run(sockets=[listener])
    finally:
        listener.close()
        store.close()
    return EXIT_OK


@click.command(name="serve-token")
@click.argument("name")
@click.option("--read-only", is_flag=True, help="The token may list, download and read stats, but not change anything.")
def serve_token(name: str, read_only: bool) -> int:
    """Make a new bearer token for `serve`.

    Prints the token (give it to the client; it is not kept anywhere) and, on the
    next line, the hashed entry to add to the tokens file or $CHUNKSTORE_TOKENS.
    """
    from chunkstore.apps.server.auth import READ, READ_WRITE, hash_token, new_token

    if not name.strip() or any(ch.isspace() for ch in name):
        raise click.UsageError("NAME must be one word (it names the token in logs and the activity list)")
    token = new_token()
    click.echo(token)
    click.echo(f"{hash_token(token)} {READ if read_only else READ_WRITE} {name}")
    return EXIT_OK
