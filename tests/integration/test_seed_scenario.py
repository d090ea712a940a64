"""The seed's promise through the public API: refresh half-way, see exactly where it stands."""

from __future__ import annotations

from typing import Any

from tests.conftest import Api


def _statuses(status: dict[str, Any]) -> list[str]:
    return [s["status"] for s in status["steps"]]


def _stable(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events without ``durationMs``, which for a running step is as of delivery."""
    for event in events:
        for step in event["status"]["steps"]:
            step.pop("durationMs")
    return events


def _is_half_way(event: dict[str, Any]) -> bool:
    steps = _statuses(event["status"])
    running = [s for s in event["status"]["steps"] if s["status"] == "RUNNING"]
    return steps.count("COMPLETED") >= 2 and bool(running) and running[0]["progress"] > 0


async def test_refresh_at_half_way_shows_completed_and_running_steps(api_for: Any) -> None:
    api: Api = await api_for(step_delay_seconds=0.4)
    project_id = await api.create_project("Seed Service")

    async with api.subscribe(project_id) as first_page:
        while not _is_half_way(event := await first_page.next_event()):  # type: ignore[arg-type]
            assert event is not None
        seen_before_refresh = event["seq"]
    # The page was closed half-way; a new page opens (a refresh).
    async with api.subscribe(project_id) as refreshed:
        snapshot = await refreshed.next_event()
        assert snapshot is not None and snapshot["type"] == "SNAPSHOT"
        assert snapshot["seq"] >= seen_before_refresh
        steps = _statuses(snapshot["status"])
        completed = steps.count("COMPLETED")
        assert completed >= 2
        assert steps == ["COMPLETED"] * completed + ["RUNNING"] + ["PENDING"] * (6 - completed)
        assert (
            snapshot["status"]["currentStep"]["name"]
            == snapshot["status"]["steps"][completed]["name"]
        )
        assert 0 < snapshot["status"]["progress"] < 100
        queried = await api.status(project_id)
        rest = await refreshed.events_until_complete()

    assert refreshed.completed
    by_seq = {e["seq"]: e for e in [snapshot, *rest]}
    # projectStatus and the stream agree on the picture at the same seq.
    assert queried["seq"] in by_seq
    assert by_seq[queried["seq"]]["status"]["progress"] == queried["progress"]
    assert _statuses(by_seq[queried["seq"]]["status"]) == _statuses(queried)
    # Live events continue from the snapshot's seq: no gap, no duplicate, then the end.
    assert [e["seq"] for e in rest] == list(
        range(snapshot["seq"] + 1, snapshot["seq"] + 1 + len(rest))
    )
    assert rest[-1]["type"] == "INITIALIZATION_COMPLETED"
    assert [e["type"] for e in rest].count("INITIALIZATION_COMPLETED") == 1
    progress = [e["status"]["progress"] for e in [snapshot, *rest]]
    assert progress == sorted(progress), "overall percent never decreases"
    final = await api.status(project_id)
    assert final["status"] == "ACTIVE" and final["progress"] == 100
    # Initialization continued rather than restarted: earlier steps kept their results.
    for before, after in zip(snapshot["status"]["steps"][:completed], final["steps"], strict=False):
        assert after["attempts"] == 1
        assert after["completedAt"] == before["completedAt"]


async def test_subscriber_with_after_seq_receives_exactly_the_following_events(
    api_for: Any,
) -> None:
    api: Api = await api_for(step_delay_seconds=0.1)
    project_id = await api.create_project("Replay Service")
    async with api.subscribe(project_id, after_seq=0) as everything:
        all_events = await everything.events_until_complete()
    assert [e["seq"] for e in all_events] == list(range(1, len(all_events) + 1))
    assert "SNAPSHOT" not in [e["type"] for e in all_events]
    assert all_events[-1]["type"] == "INITIALIZATION_COMPLETED"

    k = 5
    async with api.subscribe(project_id, after_seq=k) as resumed:
        replayed = await resumed.events_until_complete()
    assert _stable(replayed) == _stable(all_events[k:])

    last = all_events[-1]["seq"]
    async with api.subscribe(project_id, after_seq=last) as caught_up:
        assert await caught_up.events_until_complete() == []
    assert caught_up.completed


async def test_subscribing_to_a_finished_project_yields_its_snapshot_and_completes(
    api_for: Any,
) -> None:
    api: Api = await api_for()
    project_id = await api.create_project("Done Service")
    async with api.subscribe(project_id) as watching:
        await watching.events_until_complete()
    async with api.subscribe(project_id) as late:
        events = await late.events_until_complete()
    assert [e["type"] for e in events] == ["SNAPSHOT"]
    assert events[0]["status"]["status"] == "ACTIVE"
    assert events[0]["status"]["progress"] == 100


async def test_after_seq_beyond_the_last_event_is_a_clear_error(api_for: Any) -> None:
    api: Api = await api_for()
    project_id = await api.create_project("Ahead Service")
    async with api.subscribe(project_id, after_seq=10_000) as ahead:
        assert await ahead.next_event() is None
    assert ahead.errors is not None
    assert ahead.errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
