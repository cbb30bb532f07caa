"""Alembic's entry point for SESA's evolution log (qtmesh.base.storage.Migrations)."""

from qtmesh.base.storage import run_migrations

run_migrations()
