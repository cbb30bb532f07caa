"""Alembic's entry point for the officers' policy logs (qtmesh.base.storage.Migrations)."""

from qtmesh.base.storage import run_migrations

run_migrations()
