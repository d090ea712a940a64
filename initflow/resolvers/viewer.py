from __future__ import annotations

import strawberry

from initflow.schema.context import Info
from initflow.schema.types import User


async def viewer(info: Info) -> User:
    user = info.context.require_user()
    return User(id=strawberry.ID(str(user.id)), name=user.name)
