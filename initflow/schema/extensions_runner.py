"""Per-result extension work resolved once per operation, not once per result.

A subscription yields one result per event, and with a thousand subscribers a
live event is a thousand results. For each one Strawberry would look up every
extension's ``on_stream_result`` hook again (``inspect`` checks and a new context
manager per extension) and call every extension's ``get_results``, most of which
return the base class's empty dict: about a quarter of a delivery's CPU.

Invariants: the hooks that run, and the extension results sent, are the ones
Strawberry would use; only hooks whose extension says it acts on errors alone
(``acts_on_errors_only``, set by ``InitflowErrors``) are skipped for a result
without errors.
"""

from __future__ import annotations

from typing import Any

from strawberry.extensions import SchemaExtension
from strawberry.extensions.context import StreamResultContextManager, WrappedHook
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.types import ExecutionContext
from strawberry.types.execution import StreamExecutionResult
from strawberry.utils.await_maybe import await_maybe


class PreparedStreamResultHooks(StreamResultContextManager):
    """Strawberry's per-result context manager over hooks looked up beforehand."""

    def __init__(self, hooks: list[WrappedHook], result: StreamExecutionResult) -> None:
        self.result = result
        self.hooks = hooks

    async def __aenter__(self) -> None:
        if self.hooks:
            await super().__aenter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        if self.hooks:
            await super().__aexit__(*exc_info)


class PreparedExtensionsRunner(SchemaExtensionsRunner):
    def __init__(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension] | None = None
    ) -> None:
        super().__init__(execution_context, extensions)
        self._hooks_for_errors = stream_result_hooks(self.extensions)
        self._hooks_otherwise, self._with_results = clean_result_work(
            self.extensions, self._hooks_for_errors
        )

    def on_stream_result(self, result: StreamExecutionResult) -> StreamResultContextManager:
        hooks = self._hooks_for_errors if _may_carry_errors(result) else self._hooks_otherwise
        return PreparedStreamResultHooks(hooks, result)

    async def get_extensions_results(self, ctx: ExecutionContext) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for extension in self._with_results:
            data.update(await await_maybe(extension.get_results()))
        data.update(ctx.extensions_results)
        return data


def stream_result_hooks(extensions: list[SchemaExtension]) -> list[WrappedHook]:
    """Every extension's ``on_stream_result`` hook, looked up as Strawberry does."""
    return StreamResultContextManager(extensions, None).hooks  # type: ignore[arg-type]


def clean_result_work(
    extensions: list[SchemaExtension], hooks: list[WrappedHook]
) -> tuple[list[WrappedHook], list[SchemaExtension]]:
    """What a result without errors goes through, of ``extensions`` and their stream-result
    ``hooks``: (the hooks that still run, the extensions with results)."""
    clean_hooks = [
        hook for hook in hooks if not getattr(hook.extension, "acts_on_errors_only", False)
    ]
    with_results = [
        extension
        for extension in extensions
        if type(extension).get_results is not SchemaExtension.get_results
    ]
    return clean_hooks, with_results


def _may_carry_errors(result: StreamExecutionResult) -> bool:
    """Errors of its own, or incremental parts that may have some."""
    return bool(getattr(result, "errors", None)) or hasattr(result, "incremental")
