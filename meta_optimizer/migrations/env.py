"""Alembic's entry point for the proposal ledger (qtmesh.base.storage.Migrations)."""

from qtmesh.base.storage import run_migrations

run_migrations()
