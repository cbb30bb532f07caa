"""Every migrated store, on both backends: its migrations build exactly the tables it declares,
from an empty database and from one the release before migrations made (its tables created
by create_all, no version table), and a second upgrade changes nothing."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import alpha_reporting.store
import federation.store
import market.fleet.store
import memory.store
import meta.store
import meta_optimizer.store
import sesa.store
from agents.policy_log import migrations_of, policy_table
from qtmesh.base.storage import Migrations, create_engine

STORES = {
    "federation": (federation.store.MIGRATIONS, federation.store.METADATA),
    "sesa": (sesa.store.MIGRATIONS, sesa.store.METADATA),
    "memory": (memory.store.MIGRATIONS, memory.store.METADATA),
    "alpha-reporting": (alpha_reporting.store.MIGRATIONS, alpha_reporting.store.metadata),
    "meta-optimizer": (meta_optimizer.store.MIGRATIONS, meta_optimizer.store.metadata),
    "market": (market.fleet.store.MIGRATIONS, market.fleet.store.metadata),
    "meta": (meta.store.MIGRATIONS, meta.store.metadata),
    # One table per officer: two of them, to show each gets its own table and revision.
    "risk policy log": (migrations_of("risk"), policy_table("risk").metadata),
    "ceo policy log": (migrations_of("ceo"), policy_table("ceo").metadata),
}


def differences(engine: sa.Engine, migrations: Migrations, metadata: sa.MetaData) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": migrations.version_table}
        )
        return compare_metadata(context, metadata)


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("before", ["empty", "made-before-migrations"])
def test_migrations_build_the_declared_tables(database_url, store, before):
    migrations, metadata = STORES[store]
    engine = create_engine(database_url)
    try:
        if before == "made-before-migrations":
            metadata.create_all(engine)
        assert migrations.revision(engine) is None
        migrations.upgrade(engine)
        head = migrations.revision(engine)
        assert head is not None
        assert differences(engine, migrations, metadata) == []
        migrations.upgrade(engine)
        assert migrations.revision(engine) == head
    finally:
        engine.dispose()
