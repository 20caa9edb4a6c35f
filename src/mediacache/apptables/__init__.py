"""The application tables (carousels, TikTok profiles and posts) whose `*_key` columns name media.

`AppTables` (in `apptables.service`) is the part MediaCache delegates their use cases to; the
records they return live in `mediacache.records`.
"""
