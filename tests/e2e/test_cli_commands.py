"""Administrative commands run to completion as real processes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from e2e.processes import database_path, run_cli


def test_migrate_on_sqlite_applies_the_schema_and_exits(tmp_path: Path) -> None:
    # run_cli fails after 60 s: `migrate` once hung on SQLite's worker thread after its work.
    assert "migrations applied" in run_cli(tmp_path, "migrate")
    assert "migrations applied" in run_cli(tmp_path, "migrate"), "a second run is a no-op"
    with sqlite3.connect(database_path(tmp_path)) as connection:
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
    assert {"projects", "initialization_steps", "progress_events"} <= tables
