"""The `mediacache` command line."""

from mediacache.cli.app import app, main

__all__ = ["app", "main"]
