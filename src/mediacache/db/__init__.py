"""Database access: models, engine and the repository where every query lives."""
