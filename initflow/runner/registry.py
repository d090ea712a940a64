"""What a step is, what it may use, and the registry binding names to code.

A step is idempotent: run again after a crash at any point it converges to the
same effect. It reads what an earlier attempt left in ``checkpoint`` and
writes database effects only inside ``ctx.transaction()``, which is fenced by
the run's lease.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tortoise.backends.base.client import BaseDBAsyncClient

from initflow.services.snapshots import ProjectFacts
from initflow.services.templates import TemplateCatalog
from initflow.settings import Settings
from initflow.step_plan import STEP_NAMES

__all__ = ["ProjectFacts", "StepContext", "StepRegistry", "StepResult"]


@dataclass(frozen=True)
class StepResult:
    message: str
    skipped: bool = False
    checkpoint: dict[str, Any] = field(default_factory=dict)


ReportProgress = Callable[[int, int, str], Awaitable[None]]


@dataclass
class StepContext:
    project: ProjectFacts
    settings: Settings
    catalog: TemplateCatalog
    checkpoint: dict[str, Any]
    transaction: Callable[[], AbstractAsyncContextManager[BaseDBAsyncClient]]
    report: ReportProgress

    @property
    def workspace(self) -> Path:
        return self.settings.workspaces_dir / str(self.project.id)

    @property
    def repository_path(self) -> Path:
        return self.settings.repositories_dir / f"{self.project.id}.git"

    @property
    def clone_url(self) -> str:
        return f"{self.settings.base_url}/git/{self.project.id}.git"

    async def progress(self, done: int, total: int, message: str) -> None:
        """Report sub-progress (``files 12/40``); paces the step when a demo delay is set."""
        await self.report(done, total, message)
        if self.settings.step_delay_seconds > 0 and total > 0:
            await asyncio.sleep(self.settings.step_delay_seconds / total)


class Step(Protocol):
    name: str

    async def run(self, ctx: StepContext) -> StepResult: ...


class StepRegistry:
    """Exactly the steps of the plan, each bound to its implementation."""

    def __init__(self, steps: Mapping[str, Step]) -> None:
        missing = set(STEP_NAMES) - set(steps)
        unknown = set(steps) - set(STEP_NAMES)
        if missing or unknown:
            raise ValueError(f"step registry mismatch: missing {missing}, unknown {unknown}")
        self._steps = dict(steps)

    def __getitem__(self, name: str) -> Step:
        return self._steps[name]

    def replaced(self, **steps: Step) -> StepRegistry:
        """A copy with some steps swapped (used by tests that need a failing step)."""
        return StepRegistry({**self._steps, **steps})
