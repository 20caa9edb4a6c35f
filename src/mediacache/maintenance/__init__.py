"""Maintenance of the cache: cleanup of old assets, reconciliation of lost jobs, orphan collection."""
