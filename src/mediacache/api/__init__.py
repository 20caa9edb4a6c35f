"""The HTTP service: JSON API, media redirects, signed local files, metrics and the dashboard."""

from mediacache.api.app import create_app

__all__ = ["create_app"]
