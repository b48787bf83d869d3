"""The HTTP service and its web page: ``facemark serve`` or ``create_app()`` with any ASGI server."""

from facemark.serve.app import create_app

__all__ = ["create_app"]
