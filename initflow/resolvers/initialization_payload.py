"""The shared shape of retryInitialization and cancelInitialization."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from uuid import UUID

import strawberry

from initflow.errors import InvalidInput
from initflow.models import User
from initflow.resolvers.user_errors import user_errors
from initflow.schema.context import Info
from initflow.schema.types import InitializationPayload, ProjectStatus
from initflow.services.projects import parse_project_id
from initflow.status import StatusView

Action = Callable[[User, UUID], Awaitable[StatusView]]


async def initialization_payload(
    info: Info, project_id: strawberry.ID, action: Action
) -> InitializationPayload:
    try:
        view = await action(info.context.require_user(), parse_project_id(project_id))
    except InvalidInput as exc:
        return InitializationPayload(status=None, user_errors=user_errors(exc))
    stall_after = info.context.services.settings.stall_after
    return InitializationPayload(status=ProjectStatus.from_view(view, stall_after), user_errors=[])
