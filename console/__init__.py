"""The console: web pages and an HTTP/JSON API over the mesh, live from its streams."""

from console.api import create_api
from console.config import ConsoleConfig

__all__ = ["ConsoleConfig", "create_api"]
