"""Where search results live: the read protocol the CLI uses and the local SQLite store."""

from schedsearch.store.base import (
    HistoryPoint,
    NotFoundError,
    ResultsBackend,
    SearchExistsError,
    SearchRecord,
    StoredSchedule,
    StoreError,
    member_summaries,
)
from schedsearch.store.sqlite import STORE_ENV, SQLiteStore, default_store_path

__all__ = [
    "STORE_ENV",
    "HistoryPoint",
    "NotFoundError",
    "ResultsBackend",
    "SQLiteStore",
    "SearchExistsError",
    "SearchRecord",
    "StoreError",
    "StoredSchedule",
    "default_store_path",
    "member_summaries",
]
