"""The HTTP API and web page over a store (needs the `serve` extra: FastAPI and uvicorn)."""

from chunkstore.apps.server.app import ServerSettings, create_app, create_app_for_url
from chunkstore.apps.server.auth import TokenSet

__all__ = ["ServerSettings", "TokenSet", "create_app", "create_app_for_url"]
