"""Per-result extension work is looked up once, and still does what Strawberry's would."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionResult

from initflow.errors import NotFound
from initflow.schema.errors import InitflowErrors
from initflow.schema.extensions_runner import PreparedExtensionsRunner
from initflow.schema.root import InitflowSchema

SEEN: list[object] = []


class RecordsEveryResult(SchemaExtension):
    def on_stream_result(self, result: Any) -> Iterator[None]:
        SEEN.append(result.data)
        yield


class AddsResults(SchemaExtension):
    def get_results(self) -> dict[str, Any]:
        return {"added": True}


@strawberry.type
class Query:
    ok: bool = True


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def ticks(self) -> AsyncGenerator[int, None]:
        yield 1
        yield 2

    @strawberry.subscription
    async def failing(self) -> AsyncGenerator[int, None]:
        yield 1
        raise RuntimeError("secret internals")

    @strawberry.subscription
    async def refused(self) -> AsyncGenerator[int, None]:
        raise NotFound("Project not found")
        yield 0  # pragma: no cover


async def results(document: str, *extensions: Any) -> list[dict[str, Any]]:
    """Each result as a transport would send it: formatted when it is yielded."""
    schema = InitflowSchema(query=Query, subscription=Subscription, extensions=list(extensions))
    stream = await schema.subscribe(document)
    sent: list[dict[str, Any]] = []
    async for result in stream:  # type: ignore[union-attr]
        errors = [error.formatted["message"] for error in result.errors or ()]
        sent.append({"data": result.data, "errors": errors, "extensions": result.extensions})
    return sent


async def test_hooks_that_act_on_every_result_run_for_every_result() -> None:
    SEEN.clear()
    received = await results("subscription { ticks }", RecordsEveryResult, InitflowErrors)
    assert [r["data"] for r in received] == [{"ticks": 1}, {"ticks": 2}]
    assert SEEN == [{"ticks": 1}, {"ticks": 2}]


async def test_extension_results_reach_every_result() -> None:
    received = await results("subscription { ticks }", AddsResults, InitflowErrors)
    assert [r["extensions"] for r in received] == [{"added": True}, {"added": True}]


async def test_an_unexpected_error_in_a_stream_is_still_masked() -> None:
    received = await results("subscription { failing }", InitflowErrors)
    assert received[0]["data"] == {"failing": 1}
    message = received[-1]["errors"][0]
    assert message.startswith("Internal server error") and "secret" not in message


async def test_our_own_errors_in_a_stream_keep_their_message() -> None:
    received = await results("subscription { refused }", InitflowErrors)
    assert received[-1]["errors"] == ["Project not found"]


def test_a_clean_result_skips_hooks_that_act_on_errors_only() -> None:
    masking = InitflowErrors()
    runner = PreparedExtensionsRunner(None, [masking])  # type: ignore[arg-type]
    assert runner.on_stream_result(ExecutionResult(data={"ok": True}, errors=None)).hooks == []
    with_error = ExecutionResult(data=None, errors=[GraphQLError("boom")])
    assert [hook.extension for hook in runner.on_stream_result(with_error).hooks] == [masking]
