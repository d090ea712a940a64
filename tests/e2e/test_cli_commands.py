"""Administrative commands run to completion as real processes."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from e2e.processes import database_path, run_cli, run_to_completion


def test_migrate_on_sqlite_applies_the_schema_and_exits(tmp_path: Path) -> None:
    # run_cli fails after 60 s: `migrate` once hung on SQLite's worker thread after its work.
    assert "migrations applied" in run_cli(tmp_path, "migrate")
    assert "migrations applied" in run_cli(tmp_path, "migrate"), "a second run is a no-op"
    with sqlite3.connect(database_path(tmp_path)) as connection:
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
    assert {"projects", "initialization_steps", "progress_events"} <= tables


def test_a_worker_starts_without_the_graphql_schema_or_the_web_server(tmp_path: Path) -> None:
    # A restarted worker's runs wait for its start-up; the schema and aiohttp's server
    # were a third of it, and a worker serves no API.
    script = (
        "import sys\n"
        "from initflow.cli import main\n"
        "assert main(['worker', '--burst']) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('strawberry', 'graphql')"
        " or m.startswith('aiohttp.web')))\n"
    )
    output = run_to_completion([sys.executable, "-c", script], tmp_path)
    assert output.strip().splitlines()[-1] == "[]"
