from __future__ import annotations

import strawberry

from initflow.errors import InvalidInput
from initflow.resolvers.user_errors import user_errors
from initflow.schema.context import Info
from initflow.schema.types import InitializationPayload, ProjectStatus
from initflow.services.projects import parse_project_id


async def retry_initialization(info: Info, project_id: strawberry.ID) -> InitializationPayload:
    """Resume a FAILED or CANCELED initialization from the step that stopped it.

    Completed steps keep their results; a second call while the retry runs is a no-op.
    """
    user = info.context.require_user()
    services = info.context.services
    try:
        view = await services.initialization.retry(user, parse_project_id(project_id))
    except InvalidInput as exc:
        return InitializationPayload(status=None, user_errors=user_errors(exc))
    return InitializationPayload(
        status=ProjectStatus.from_view(view, services.settings.stall_after), user_errors=[]
    )
