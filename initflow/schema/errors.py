"""Error masking: our errors keep their message and code; anything else is masked.

Validation and syntax errors (no original error) stay readable. A masked error
carries a request id that is logged with the original, so an operator can find it.
"""

from __future__ import annotations

import logging
import uuid

from graphql.error import GraphQLError
from strawberry.extensions import MaskErrors

from initflow.errors import InitflowError

log = logging.getLogger("initflow.api")


def _is_ours_or_validation(error: GraphQLError) -> bool:
    original = error.original_error
    return original is None or isinstance(original, InitflowError | GraphQLError)


class InitflowErrors(MaskErrors):
    acts_on_errors_only = True  # its per-result hook may be skipped for clean results

    def __init__(self) -> None:
        super().__init__(should_mask_error=lambda e: not _is_ours_or_validation(e))

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        request_id = uuid.uuid4().hex[:16]
        log.error(
            "unexpected error in GraphQL operation (request id %s)",
            request_id,
            exc_info=error.original_error,
            extra={"action": "graphql_error", "request_id": request_id},
        )
        return GraphQLError(
            message=f"Internal server error (request id {request_id}).",
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            extensions={"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
        )

    def _process_result(self, result: object) -> None:
        """Skip results without errors before MaskErrors' runtime-Protocol check.

        That ``isinstance`` costs more than the rest of a live event's delivery.
        """
        if getattr(result, "errors", None):
            super()._process_result(result)

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        processed = super()._process_errors(errors)
        for error in processed:
            if error.original_error is None and not error.extensions:
                error.extensions = {"code": "GRAPHQL_VALIDATION_FAILED"}
        return processed
