"""Alembic's entry point for the paper fleet's store (qtmesh.base.storage.Migrations)."""

from qtmesh.base.storage import run_migrations

run_migrations()
