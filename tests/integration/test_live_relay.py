"""Caught-up subscribers get live events straight from the fan-out, as through Strawberry."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from tests.conftest import Api


async def relayed_so_far(api: Api) -> float:
    response = await api.client.get("/metrics")
    found = re.search(r"^initflow_events_relayed_total ([0-9.e+]+)$", await response.text(), re.M)
    assert found, "the relay counter is exported"
    return float(found.group(1))


async def follow(api: Api, project_id: str) -> list[dict[str, Any]]:
    async with api.subscribe(project_id) as stream:
        snapshot = await stream.next_event()
        assert snapshot is not None and snapshot["type"] == "SNAPSHOT"
        return [snapshot, *await stream.events_until_complete()]


async def test_subscribers_of_a_running_project_get_every_event_once_in_order_and_relayed(
    api_for: Any,
) -> None:
    api: Api = await api_for(step_delay_seconds=0.2)
    project_id = await api.create_project("Relayed")
    before = await relayed_so_far(api)
    first, second = await asyncio.gather(follow(api, project_id), follow(api, project_id))

    for events in (first, second):
        live = events[1:]
        assert [e["seq"] for e in live] == list(range(events[0]["seq"] + 1, live[-1]["seq"] + 1))
        assert live[-1]["type"] == "INITIALIZATION_COMPLETED"
    common = {e["seq"] for e in first[1:]} & {e["seq"] for e in second[1:]}
    assert common, "both followed the run live"
    same = [e for e in first if e["seq"] in common]
    assert same == [e for e in second if e["seq"] in common], "one result for one document"
    relayed = await relayed_so_far(api) - before
    assert 0 < relayed <= len(first) + len(second) - 2
    final = await api.status(project_id)
    assert final["status"] == "ACTIVE" and final["seq"] == first[-1]["seq"]
