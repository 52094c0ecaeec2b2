"""SQLAlchemy tables, the group-commit state store, Alembic migrations, artifacts."""
