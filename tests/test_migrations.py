"""The schema is Alembic's: upgrade/downgrade on both backends, no drift from the code's metadata, the
ini works from an installed checkout, and the app refuses (PostgreSQL) or upgrades (SQLite) an old DB."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from typer.testing import CliRunner

from coldlabel import store as st
from coldlabel.cli.db import app as db_app
from coldlabel.store import engine as store_engine

REPO = Path(__file__).resolve().parent.parent
TABLES = {"llm_calls", "runs", "run_users", "stage_results", "edges", "triplets"}


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_creates_schema_and_downgrade_removes_it(store_url):
    assert st.current_revision(store_url) is None
    st.upgrade(store_url)
    assert st.current_revision(store_url) == st.head_revision()
    assert TABLES <= _tables(store_url)
    st.upgrade(store_url)  # running it again is a no-op, not an error
    st.downgrade(store_url, "base")
    assert st.current_revision(store_url) is None
    assert not (TABLES & _tables(store_url))
    st.upgrade(store_url)  # and the round trip works
    assert TABLES <= _tables(store_url)


def test_migrated_schema_matches_metadata(store_url):
    st.upgrade(store_url)
    engine = store_engine.make_engine(store_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), st.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_metadata_drift_would_be_detected(sqlite_url):
    """The comparison above is not vacuous: a column the migration lacks shows up as a diff."""
    st.upgrade(sqlite_url)
    changed = sa.MetaData()
    for table in st.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["runs"].append_column(sa.Column("extra", sa.Integer))
    engine = store_engine.make_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), changed)
    finally:
        engine.dispose()
    assert [d[0] for d in diff] == ["add_column"] and diff[0][3].name == "extra"


@pytest.mark.services
def test_postgres_behind_head_is_refused_with_the_command_to_run(postgres_url):
    with pytest.raises(st.StoreError, match="run `coldlabel db upgrade`"):
        st.Store(postgres_url)
    assert st.current_revision(postgres_url) is None  # nothing was changed implicitly
    st.upgrade(postgres_url)
    with st.Store(postgres_url) as opened:
        assert opened.list_runs() == []


def test_sqlite_is_upgraded_on_open(sqlite_url):
    with st.Store(sqlite_url) as opened:
        assert opened.list_runs() == []
    assert st.current_revision(sqlite_url) == st.head_revision()


def test_sqlite_without_auto_upgrade_is_refused(sqlite_url):
    with pytest.raises(st.StoreError, match="coldlabel db upgrade"):
        st.Store(sqlite_url, auto_upgrade=False)


def test_unknown_newer_revision_is_refused(sqlite_url):
    st.upgrade(sqlite_url)
    engine = store_engine.make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(st.StoreError, match="newer version"):
        st.Store(sqlite_url)


def test_sqlite_pragmas(sqlite_url):
    engine = store_engine.make_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == int(store_engine.BUSY_TIMEOUT_S * 1000)
    finally:
        engine.dispose()


def test_in_memory_sqlite_is_refused_clearly():
    with pytest.raises(st.StoreError, match="in-memory SQLite"):
        store_engine.make_engine("sqlite://")


@pytest.mark.parametrize("ini", ["migrations/alembic.ini", "alembic.ini"])
def test_alembic_command_line(sqlite_url, tmp_path, ini):
    """`alembic -c <ini> upgrade head` works, from any working directory."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "alembic", "-c", str(REPO / ini), "-x", f"url={sqlite_url}", "upgrade", "head"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert st.current_revision(sqlite_url) == st.head_revision()


def test_alembic_command_line_uses_coldlabel_settings(tmp_path):
    """Without -x url, the ini falls back to the app's own store URL (data.root from the env)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLDLABEL_DATA__ROOT": str(tmp_path / "data")}
    env.pop("COLDLABEL_STORE__URL", None)
    env.pop("COLDLABEL_CONFIG", None)
    done = subprocess.run([sys.executable, "-m", "alembic", "-c", str(REPO / "migrations/alembic.ini"),
                           "upgrade", "head"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert st.current_revision(f"sqlite:///{tmp_path / 'data' / 'coldlabel.db'}") == st.head_revision()


def test_db_cli_upgrade_and_current(store_url):
    runner = CliRunner()
    behind = runner.invoke(db_app, ["current", "--url", store_url])
    assert behind.exit_code == 1 and "coldlabel db upgrade" in behind.output
    up = runner.invoke(db_app, ["upgrade", "--url", store_url])
    assert up.exit_code == 0, up.output
    assert f"<empty> -> {st.head_revision()}" in up.output
    again = runner.invoke(db_app, ["upgrade", "--url", store_url])
    assert "already at" in again.output
    now = runner.invoke(db_app, ["current", "--url", store_url])
    assert now.exit_code == 0 and "up to date" in now.output


def test_db_cli_reads_store_url_from_settings(sqlite_url):
    result = CliRunner().invoke(db_app, ["upgrade"], env={"COLDLABEL_STORE__URL": sqlite_url})
    assert result.exit_code == 0, result.output
    assert st.current_revision(sqlite_url) == st.head_revision()


def test_an_unreachable_database_is_one_known_error_when_opened_read_or_upgraded():
    from coldlabel.errors import StoreUnavailable
    from tests.support.services import free_port

    url = f"postgresql+psycopg://coldlabel:hunter2@127.0.0.1:{free_port()}/nowhere"
    for call in (lambda: st.Store(url), lambda: st.current_revision(url), lambda: st.upgrade(url)):
        with pytest.raises(StoreUnavailable, match=r"database postgresql\+psycopg://coldlabel:\*\*\*@127\.0\.0\.1:\d+/"
                                                   r"nowhere cannot be reached: .*Connection refused") as err:
            call()
        assert "hunter2" not in str(err.value) and "\n" not in str(err.value)


def test_a_sqlite_store_that_cannot_be_created_is_a_store_error(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(st.StoreError, match="cannot create the directory of the SQLite store"):
        st.Store(f"sqlite:///{tmp_path / 'file' / 'store.db'}")


def test_upgrading_from_0001_keeps_every_row(store_url):
    """0002 recreates `runs` on SQLite (batch mode): with foreign keys on, dropping the old table would
    cascade-delete every user, stage and label of every run. Nothing may be lost, on either backend."""
    st.upgrade(store_url, "0001")
    engine = store_engine.make_engine(store_url)
    now = "2025-01-01 00:00:00"
    with engine.connect() as conn, conn.begin():
        conn.execute(sa.text(
            "INSERT INTO runs (id, name, dataset, dataset_fingerprint, endpoint, model, prompt_version, config, "
            "status, endpoint_switches, created_at, updated_at) VALUES "
            f"('r1', '', 'd', 'fp', 'e', 'm', 'v', '{{}}', 'active', '[]', '{now}', '{now}')"))
        conn.execute(sa.text("INSERT INTO run_users (run_id, user_idx, user_id, status) VALUES "
                             "('r1', 0, 'u0', 'done'), ('r1', 1, 'u1', 'running')"))
        conn.execute(sa.text("INSERT INTO stage_results (run_id, user_idx, stage, part, call_keys, output, "
                             f"used_fallback, created_at) VALUES ('r1', 0, 'profile', '', '[]', '{{}}', false, '{now}')"))
        conn.execute(sa.text("INSERT INTO edges (run_id, user_idx, item_idx, item_id, weight, from_fallback) "
                             "VALUES ('r1', 0, 7, 'i7', 1.0, false)"))
    engine.dispose()
    st.upgrade(store_url)
    with st.Store(store_url) as opened:
        run = opened.get_run("r1")
        assert (run.status, run.status_reason, run.dataset_fingerprint) == ("active", None, "fp")
        assert opened.users_by_status("r1")["done"] == [0] and opened.users_by_status("r1")["running"] == [1]
        assert set(opened.load_stages("r1", 0)) == {("profile", "")} and len(list(opened.export_edges("r1"))) == 1
        assert opened.get_user("r1", 1).lease_expires_at is None
        opened.set_run_status("r1", "paused", "the new statuses are allowed")
        assert opened.get_run("r1").status == "paused"
        opened.set_run_status("r1", "active")
    with pytest.raises(sa.exc.IntegrityError):  # and the check constraint still guards the column
        engine = store_engine.make_engine(store_url)
        try:
            with engine.connect() as conn, conn.begin():
                conn.execute(sa.text("UPDATE runs SET status = 'sleeping'"))
        finally:
            engine.dispose()
    st.downgrade(store_url, "0001")  # and back: the rows survive that too
    engine = store_engine.make_engine(store_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM run_users")).scalar() == 2
        assert conn.execute(sa.text("SELECT count(*) FROM edges")).scalar() == 1
    engine.dispose()
