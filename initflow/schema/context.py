"""Per-request (HTTP) or per-connection (WebSocket) context.

Nothing user-specific is cached here beyond the authenticated user, because a
WebSocket context lives as long as the connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from strawberry.types import Info as StrawberryInfo

from initflow.errors import Unauthenticated
from initflow.models import User
from initflow.services.container import Services


@dataclass
class Context:
    services: Services
    user: User | None = None
    connection_params: dict[str, Any] | None = None
    request: Any = None
    response: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def require_user(self) -> User:
        if self.user is None:
            error = self.extra.get("auth_error")
            raise error if isinstance(error, Unauthenticated) else Unauthenticated()
        return self.user


Info = StrawberryInfo[Context, None]
