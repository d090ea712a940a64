"""The runner loop: claim due initializations and execute them, several at a time.

The bus wakes the loop when work appears; a poll interval is the fallback, so
a lost wake-up costs latency, never correctness. At start-up the instance's
own leases (same persisted instance id) are claimable at once, so a restarted
instance resumes its runs without waiting for them to expire. ``stop`` cancels
executors, which release their leases for another instance.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from functools import partial
from uuid import UUID

import aiohttp

from initflow.bus import ProgressBus
from initflow.metrics import Metrics
from initflow.runner.executor import Executor
from initflow.runner.faults import CrashPoints
from initflow.runner.leases import claim_next
from initflow.runner.registry import StepRegistry
from initflow.services.templates import TemplateCatalog
from initflow.services.webhooks import deliver_pending
from initflow.settings import Settings

log = logging.getLogger("initflow.runner")

MAX_CONCURRENT_RUNS = 16
STOP_TIMEOUT = 15.0


class Runner:
    def __init__(
        self,
        *,
        settings: Settings,
        instance_id: str,
        bus: ProgressBus,
        registry: StepRegistry,
        catalog: TemplateCatalog,
        metrics: Metrics,
    ) -> None:
        self.instance_id = instance_id
        self.metrics = metrics
        self._settings = settings
        self._bus = bus
        self._registry = registry
        self._catalog = catalog
        self._crash_points = CrashPoints(settings.crash_at)
        self._ttl = timedelta(seconds=settings.lease_ttl_seconds)
        self._running: dict[UUID, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self.loop_alive = False

    async def start(self) -> None:
        self._http = aiohttp.ClientSession()
        self._loop_task = asyncio.create_task(self._loop(), name="initflow-runner")

    async def stop(self) -> None:
        """Stop claiming, cancel executors (they release their leases) and wait for them.

        Bounded: a shutdown never waits more than STOP_TIMEOUT on a stuck task; a
        lease that could not be released simply expires.
        """
        tasks = list(self._running.values())
        if self._loop_task is not None:
            tasks.append(self._loop_task)
        for task in tasks:
            task.cancel()
        _, stuck = await asyncio.wait(tasks, timeout=STOP_TIMEOUT) if tasks else (set(), set())
        if stuck:
            log.warning(
                "%d runner tasks did not stop within %ss",
                len(stuck),
                STOP_TIMEOUT,
                extra={"action": "stop_timeout"},
            )
        if self._http is not None:
            await self._http.close()

    async def run_until_idle(self) -> None:
        """Claim and run until nothing is claimable (tests and `initflow worker --burst`).

        A slot is refilled as soon as its run ends, as in the long-running loop.
        """
        while True:
            await self._claim_and_start()
            if not self._running:
                return
            await asyncio.wait(list(self._running.values()), return_when=asyncio.FIRST_COMPLETED)

    async def _loop(self) -> None:
        self.loop_alive = True
        self.metrics.runner_loop_alive.set(1)
        try:
            while True:
                try:
                    claimed = await self._claim_and_start()
                    if self._http is not None:
                        await deliver_pending(self._http, self.metrics)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("runner loop iteration failed", extra={"action": "loop_error"})
                    claimed = False
                if not claimed:
                    await self._bus.wait_for_work(self._settings.poll_interval_seconds)
        finally:
            self.loop_alive = False
            self.metrics.runner_loop_alive.set(0)

    async def _claim_and_start(self) -> bool:
        """Fill free slots with claimed runs; True if anything was claimed."""
        claimed_any = False
        while len(self._running) < MAX_CONCURRENT_RUNS:
            lease = await claim_next(self.instance_id, self._ttl, exclude=self._running.keys())
            if lease is None:
                break
            claimed_any = True
            executor = Executor(
                lease,
                registry=self._registry,
                settings=self._settings,
                catalog=self._catalog,
                bus=self._bus,
                crash_points=self._crash_points,
                metrics=self.metrics,
            )
            task = asyncio.create_task(executor.run(), name=f"initflow-run-{lease.project_id}")
            self._running[lease.project_id] = task
            task.add_done_callback(partial(self._finished, lease.project_id))
        return claimed_any

    def _finished(self, project_id: UUID, _task: asyncio.Task[None]) -> None:
        task = self._running.pop(project_id, None)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error(
                "executor crashed",
                exc_info=task.exception(),
                extra={"action": "executor_crashed", "project_id": str(project_id)},
            )
        # A slot of ours is free: wake our own loop. Other instances have nothing to
        # gain (a run paused for retry is due later; their poll finds it).
        self._bus.notice_work()
