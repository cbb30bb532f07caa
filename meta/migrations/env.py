"""Alembic's entry point for meta's store (qtmesh.base.storage.Migrations)."""

from qtmesh.base.storage import run_migrations

run_migrations()
