"""The seed's application tables (carousels, TikTok profiles and posts) whose `*_key` columns name media."""

from mediacache.apptables.mixin import AppTablesMixin
from mediacache.apptables.records import (
    BackfillReport,
    CarouselRecord,
    ImageRecord,
    LegacyKeyProblem,
    RecordNotFoundError,
    SlideRecord,
    TikTokPostPage,
    TikTokPostRecord,
    TikTokProfileRecord,
)

__all__ = [
    "AppTablesMixin", "BackfillReport", "CarouselRecord", "ImageRecord", "LegacyKeyProblem", "RecordNotFoundError",
    "SlideRecord", "TikTokPostPage", "TikTokPostRecord", "TikTokProfileRecord",
]
