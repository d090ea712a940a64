from __future__ import annotations

import strawberry

from initflow.resolvers.initialization_payload import initialization_payload
from initflow.schema.context import Info
from initflow.schema.types import InitializationPayload


async def cancel_initialization(info: Info, project_id: strawberry.ID) -> InitializationPayload:
    """Stop a running initialization (between or inside steps); what was created stays."""
    return await initialization_payload(
        info, project_id, info.context.services.initialization.cancel
    )
