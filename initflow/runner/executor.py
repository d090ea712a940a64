"""Execute one claimed initialization, step by step, from where it stands.

Invariants: a done step (completed or skipped) never runs again; each
transition is one commit with its event, and "step k completed" and "step k+1
started" share that commit; a lost lease stops the executor without another
write; a graceful stop releases the lease so another runner continues at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import timedelta

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import DBConnectionError, OperationalError

from initflow.bus import ProgressBus
from initflow.clock import utcnow
from initflow.errors import InitflowError, LeaseLost, PermanentStepError, TransientStepError
from initflow.events import EventType
from initflow.metrics import Metrics
from initflow.models import AuditEntry
from initflow.runner.faults import CrashPoints
from initflow.runner.journal import Change, RunJournal
from initflow.runner.leases import Lease, fenced_transaction, release, renew
from initflow.runner.registry import ProjectFacts, StepContext, StepRegistry, StepResult
from initflow.services.snapshots import load_run_start
from initflow.services.templates import TemplateCatalog
from initflow.services.webhooks import record_delivery
from initflow.settings import Settings
from initflow.states import ProjectState, StepState
from initflow.status import StepView

log = logging.getLogger("initflow.runner")

MAX_ATTEMPTS = 3
PROGRESS_WRITE_INTERVAL = 0.1
TRANSIENT_ERRORS = (OSError, TimeoutError, OperationalError, DBConnectionError)


def retry_delay(attempt: int) -> timedelta:
    """Exponential backoff with full jitter: ~1 s, 2 s, 4 s … capped at 60 s."""
    ceiling = min(60.0, 2.0 ** (attempt - 1))
    return timedelta(seconds=ceiling / 2 + random.uniform(0, ceiling / 2))


class Executor:
    def __init__(
        self,
        lease: Lease,
        *,
        registry: StepRegistry,
        settings: Settings,
        catalog: TemplateCatalog,
        bus: ProgressBus,
        crash_points: CrashPoints,
        metrics: Metrics,
    ) -> None:
        self.lease = lease
        self._registry = registry
        self._settings = settings
        self._catalog = catalog
        self._bus = bus
        self._crash = crash_points
        self._metrics = metrics
        self._lease_lost = False
        # Set just before a commit that gives the lease up (finish, fail, pause to retry),
        # so the heartbeat does not mistake that for a lost lease and interrupt the publish.
        self._handing_over = False
        self._failed_attempts = 0

    async def run(self) -> None:
        """Run to the end, a failure, a retry pause, a lost lease or cancellation."""
        main = asyncio.current_task()
        assert main is not None
        heartbeat = asyncio.create_task(self._heartbeat(main))
        watcher = asyncio.create_task(self._watch_for_cancel(main))
        try:
            await self._run()
        except LeaseLost:
            self._log("lease_lost", "lease lost; stopping without further writes")
        except asyncio.CancelledError:
            if self._lease_lost:
                self._log("lease_lost", "lease lost during a step; stopped")
                return
            await asyncio.shield(self._release_for_takeover())
            self._log("lease_released", "stopped; lease released for another runner")
            raise
        finally:
            heartbeat.cancel()
            watcher.cancel()

    async def _release_for_takeover(self) -> None:
        """Release the lease and wake every instance's runner, so another continues at once."""
        if await release(self.lease):
            await self._bus.wake_runners()

    async def _watch_for_cancel(self, main: asyncio.Task[None]) -> None:
        """Stop at once (cooperatively, also inside a step) when the run is canceled.

        The fence would stop us at our next write anyway; this makes it immediate.
        """
        async with self._bus.watch_cancel(str(self.lease.project_id)) as canceled:
            await canceled.wait()
        self._lease_lost = True
        self._log("canceled", "run canceled; stopping")
        main.cancel()

    async def _heartbeat(self, main: asyncio.Task[None]) -> None:
        interval = self.lease.ttl.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await renew(self.lease)
            except LeaseLost:
                if self._handing_over:
                    return  # our own last commit gave the lease up; nothing was lost
                self._lease_lost = True
                main.cancel()
                return

    async def _run(self) -> None:
        start = await load_run_start(self.lease.project_id)
        self._failed_attempts = start.run_attempts
        status, facts = start.status, start.facts
        journal = RunJournal(self.lease, status, self._bus)
        if self.lease.taken_over_from:
            self._metrics.takeovers.inc()
            self._log("takeover", f"took over from {self.lease.taken_over_from}")
        elif self.lease.resumed_own and any(
            s.status is not StepState.PENDING for s in status.steps
        ):
            self._metrics.recoveries.inc()
            self._log("recovered", "resumed a run this instance held before it stopped")
        pending = [s for s in status.steps if not s.status.is_done]
        if not pending:
            self._handing_over = True
            await journal.record(_completed_change())
            return
        await journal.record(self._start(journal, pending[0]))
        self._crash.reached(pending[0].name, "started")
        for index, step in enumerate(pending):
            result = await self._attempt(journal, facts, step.name)
            if result is None:
                return
            changes = [self._finish(journal, step.name, result)]
            following = pending[index + 1] if index + 1 < len(pending) else None
            changes.append(self._start(journal, following) if following else _completed_change())
            self._handing_over = following is None
            await journal.record(*changes, project_changes={"run_attempts": 0})
            self._failed_attempts = 0
            self._observe_duration(journal, step.name)
            self._log("step_done", f"{step.name}: {result.message}", step.name)
            self._crash.reached(step.name, "completed")
            if following:
                self._crash.reached(following.name, "started")
        self._metrics.runs_completed.inc()
        self._log("completed", "initialization completed")

    def _observe_duration(self, journal: RunJournal, name: str) -> None:
        step = journal.status.step(name)
        if step.started_at is not None and step.completed_at is not None:
            seconds = (step.completed_at - step.started_at).total_seconds()
            self._metrics.step_duration.labels(step=name).observe(seconds)

    def _start(self, journal: RunJournal, step: StepView) -> Change:
        current = journal.status.step(step.name)
        return Change(
            EventType.STEP_STARTED,
            step.name,
            {
                "status": StepState.RUNNING,
                "attempts": current.attempts + 1,
                "started_at": current.started_at or utcnow(),
                "message": "Starting",
                "error_code": None,
                "error_message": None,
                "next_attempt_at": None,
            },
        )

    def _finish(self, journal: RunJournal, name: str, result: StepResult) -> Change:
        return Change(
            EventType.STEP_SKIPPED if result.skipped else EventType.STEP_COMPLETED,
            name,
            {
                "status": StepState.SKIPPED if result.skipped else StepState.COMPLETED,
                "progress": 100,
                "message": result.message,
                "completed_at": utcnow(),
            },
            checkpoint=result.checkpoint,
        )

    async def _attempt(
        self, journal: RunJournal, facts: ProjectFacts, name: str
    ) -> StepResult | None:
        """Run one step; ``None`` when the run must stop here (failed or paused to retry)."""
        context = StepContext(
            project=facts,
            settings=self._settings,
            catalog=self._catalog,
            checkpoint={},
            transaction=lambda: fenced_transaction(self.lease),
            report=self._reporter(journal, name),
        )
        timeout = self._settings.step_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                return await self._registry[name].run(context)
        except (LeaseLost, asyncio.CancelledError):
            raise
        except TimeoutError:
            await self._retry_or_fail(
                journal,
                name,
                TransientStepError(
                    f"Step did not finish within {timeout:g} s", code="STEP_TIMEOUT"
                ),
            )
        except PermanentStepError as exc:
            await self._fail(journal, name, exc)
        except TransientStepError as exc:
            await self._retry_or_fail(journal, name, exc)
        except InitflowError as exc:
            await self._fail(journal, name, PermanentStepError(exc.message, code=exc.code))
        except TRANSIENT_ERRORS as exc:
            self._log("transient_error", f"{name}: {exc!r}", name, logging.WARNING)
            await self._retry_or_fail(
                journal,
                name,
                TransientStepError(
                    f"Temporary problem in step '{name}' ({type(exc).__name__})",
                    code="TRANSIENT_ERROR",
                ),
            )
        except Exception as exc:
            self._log("step_crashed", f"{name} raised unexpectedly", name, logging.ERROR, exc)
            transient = TransientStepError(
                f"Unexpected error in step '{name}' ({type(exc).__name__}); see server logs",
                code="INTERNAL_ERROR",
            )
            await self._retry_or_fail(journal, name, transient)
        return None

    async def _fail(self, journal: RunJournal, name: str, error: InitflowError) -> None:
        title = journal.status.step(name).title
        project_id = self.lease.project_id
        settings = self._settings

        async def record_failure(connection: BaseDBAsyncClient) -> None:
            await AuditEntry.create(
                project_id=project_id,
                actor="initflow",
                action="project.failed",
                details={"step": name, "code": error.code},
                created_at=utcnow(),
                using_db=connection,
            )
            await record_delivery(settings, project_id, "initialization.failed", connection)

        self._handing_over = True
        await journal.record(
            Change(
                EventType.STEP_FAILED,
                name,
                {
                    "status": StepState.FAILED,
                    "error_code": error.code,
                    "error_message": error.message,
                    "message": error.message,
                },
            ),
            Change(
                EventType.INITIALIZATION_FAILED,
                project_status=ProjectState.FAILED,
                error=f"{title} failed: {error.message}",
            ),
            effects=record_failure,
        )
        self._metrics.step_failures.labels(step=name, code=error.code).inc()
        self._log("failed", f"{name} failed: {error.code}: {error.message}", name)

    async def _retry_or_fail(
        self, journal: RunJournal, name: str, error: TransientStepError
    ) -> None:
        """Back off and let any runner try again, up to MAX_ATTEMPTS failures in a row."""
        failures = self._failed_attempts + 1
        if failures >= MAX_ATTEMPTS:
            await self._fail(journal, name, error)
            return
        next_at = utcnow() + retry_delay(failures)
        self._handing_over = True
        await journal.record(
            Change(
                EventType.STEP_RETRYING,
                name,
                {
                    "error_code": error.code,
                    "error_message": error.message,
                    "next_attempt_at": next_at,
                    "message": f"Attempt {failures} failed; retrying at {next_at:%H:%M:%S} UTC",
                },
            ),
            project_changes={
                "run_attempts": failures,
                "next_attempt_at": next_at,
                "lease_owner": None,
                "lease_expires_at": None,
            },
        )
        self._metrics.step_retries.labels(step=name).inc()
        self._log("retry_scheduled", f"{name} failure {failures}: {error.message}", name)

    def _reporter(self, journal: RunJournal, name: str):  # type: ignore[no-untyped-def]
        last_write = time.monotonic()
        crashed_mid = False

        async def report(done: int, total: int, message: str) -> None:
            nonlocal last_write, crashed_mid
            current = journal.status.step(name)
            percent = min(99, done * 100 // total) if total else 0
            progress = max(current.progress, percent)
            now = time.monotonic()
            if now - last_write >= PROGRESS_WRITE_INTERVAL and (
                progress != current.progress or message != current.message
            ):
                await journal.record(
                    Change(
                        EventType.STEP_PROGRESS, name, {"progress": progress, "message": message}
                    )
                )
                last_write = now
            if not crashed_mid and total and done * 2 >= total:
                crashed_mid = True
                self._crash.reached(name, "mid")

        return report

    def _log(
        self,
        action: str,
        message: str,
        step: str | None = None,
        level: int = logging.INFO,
        exc: BaseException | None = None,
    ) -> None:
        log.log(
            level,
            message,
            exc_info=exc,
            extra={"action": action, "project_id": str(self.lease.project_id), "step": step},
        )


def _completed_change() -> Change:
    return Change(EventType.INITIALIZATION_COMPLETED, project_status=ProjectState.ACTIVE)
