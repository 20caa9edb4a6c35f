"""FastAPI dependencies shared by the routers: the app's one MediaCache and its settings."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mediacache.api.auth import require_read, require_write
from mediacache.service import MediaCache
from mediacache.settings import Settings


def get_cache(request: Request) -> MediaCache:
    cache: MediaCache = request.app.state.cache
    return cache


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


CacheDep = Annotated[MediaCache, Depends(get_cache)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
READ = [Depends(require_read)]
WRITE = [Depends(require_write)]
