"""Alembic's entry point for the memory engine's store (qtmesh.base.storage.Migrations)."""

from qtmesh.base.storage import run_migrations

run_migrations()
