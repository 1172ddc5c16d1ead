"""Serve a store the way `chunkstore serve` does through the library: check_listen_address,
create_app and uvicorn_config. Usage: run_server.py STORE_URL SETTINGS_JSON (ServerSettings fields)."""

import json
import socket
import sys

import uvicorn

from chunkstore import Store
from chunkstore.apps.server import ServerSettings, create_app
from chunkstore.apps.server.serving import check_listen_address, uvicorn_config


def main(store_url: str, settings_json: str) -> None:
    settings = ServerSettings(**json.loads(settings_json))
    check_listen_address("127.0.0.1", settings)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(2048)
    with Store.open(store_url) as store:
        config = uvicorn_config(create_app(store, settings), settings)
        port = listener.getsockname()[1]
        print(f"chunkstore: serving {store_url} on http://127.0.0.1:{port}/ (library)", file=sys.stderr, flush=True)
        uvicorn.Server(config).run(sockets=[listener])


if __name__ == "__main__":
    main(*sys.argv[1:])
