from __future__ import annotations

import strawberry

from initflow.resolvers.initialization_payload import initialization_payload
from initflow.schema.context import Info
from initflow.schema.types import InitializationPayload


async def retry_initialization(info: Info, project_id: strawberry.ID) -> InitializationPayload:
    """Resume a FAILED or CANCELED initialization from the step that stopped it.

    Completed steps keep their results; a second call while the retry runs is a no-op.
    """
    return await initialization_payload(
        info, project_id, info.context.services.initialization.retry
    )
