"""Prometheus instruments of one process, in their own registry (one per app).

Counters and histograms are updated where things happen (runner, stream);
gauges that describe the database (projects by state, stalled steps, oldest
queued run) are refreshed when ``/metrics`` is scraped.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from initflow.step_plan import STEP_NAMES

STEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.projects = Gauge("initflow_projects", "Projects by state.", ["state"], registry=r)
        self.step_duration = Histogram(
            "initflow_step_duration_seconds",
            "Duration of completed steps (start of the first attempt to completion).",
            ["step"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.step_retries = Counter(
            "initflow_step_retries_total",
            "Automatic retries scheduled, by step.",
            ["step"],
            registry=r,
        )
        self.step_failures = Counter(
            "initflow_step_failures_total",
            "Steps that failed permanently, by step and code.",
            ["step", "code"],
            registry=r,
        )
        self.runs_completed = Counter(
            "initflow_runs_completed_total", "Initializations that reached ACTIVE.", registry=r
        )
        self.recoveries = Counter(
            "initflow_recoveries_total",
            "Runs resumed by the instance that held them before (a restart).",
            registry=r,
        )
        self.takeovers = Counter(
            "initflow_lease_takeovers_total",
            "Runs taken over from another instance whose lease expired.",
            registry=r,
        )
        self.stalled_steps = Gauge(
            "initflow_stalled_steps",
            "Running steps that reported no progress for too long.",
            registry=r,
        )
        self.oldest_queued_run_age = Gauge(
            "initflow_oldest_queued_run_age_seconds",
            "Age of the oldest initialization that is due but held by no live runner.",
            registry=r,
        )
        self.active_subscriptions = Gauge(
            "initflow_active_subscriptions",
            "initProgress subscriptions open on this instance.",
            registry=r,
        )
        self.event_latency = Histogram(
            "initflow_event_delivery_latency_seconds",
            "From an event's commit to its delivery to a subscriber on this instance.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.events_relayed = Counter(
            "initflow_events_relayed_total",
            "Live events written to a caught-up subscriber's socket by the fan-out itself.",
            registry=r,
        )
        self.runner_loop_alive = Gauge(
            "initflow_runner_loop_alive", "1 while this instance's claim loop runs.", registry=r
        )
        for step in STEP_NAMES:  # so rates exist (as 0) before the first retry
            self.step_retries.labels(step=step)
        self.webhook_failures = Counter(
            "initflow_webhook_delivery_failures_total",
            "Failed webhook delivery attempts.",
            registry=r,
        )
