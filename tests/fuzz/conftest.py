from __future__ import annotations

from typing import Any


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    """Print the fuzz run's size in CI's output (set by the ``service`` fixture)."""
    failures = len(terminalreporter.stats.get("failed", []))
    for line in getattr(config, "fuzz_summary", []):
        terminalreporter.write_line(f"{line} failures={failures}")
