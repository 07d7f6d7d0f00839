"""The schema's revisions, oldest first (Alembic reads them by their revision ids)."""
