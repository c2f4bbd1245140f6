"""Storage: SQLAlchemy Core tables, the Store (every query), engines and migrations."""
