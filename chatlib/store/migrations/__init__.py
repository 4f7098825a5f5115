"""Alembic migrations of the conversation database (run by `chatlib.store.migrate`)."""
