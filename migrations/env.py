"""Alembic environment for the coldlabel store.

The engine comes from ``coldlabel.store.engine.make_engine`` so migrations run with the same SQLite pragmas and
locking as the app. Database URL, first found wins: a connection handed over by ``coldlabel.store.upgrade``
(``config.attributes["connection"]``), ``config.attributes["url"]``, ``alembic -x url=...``, the ini's
``sqlalchemy.url``, then the coldlabel settings (``load_settings().store_url()``).
"""
from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from coldlabel.config import load_settings
from coldlabel.store.engine import make_engine, migration_connection
from coldlabel.store.schema import metadata

config = context.config


def _url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    url = url or config.get_main_option("sqlalchemy.url")
    return url or load_settings().store_url()


def _migrate(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        render_as_batch=sqlite,  # SQLite cannot ALTER most things; batch mode copies the table instead
        transactional_ddl=True,  # also on SQLite: our engine issues BEGIN itself, so DDL is transactional
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True,
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    engine = make_engine(_url())
    try:
        with migration_connection(engine) as connection:  # SQLite: foreign keys off, one BEGIN IMMEDIATE
            _migrate(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
