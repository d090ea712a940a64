"""Expected, user-fixable problems become ``userErrors`` entries, not GraphQL errors."""

from __future__ import annotations

from initflow.errors import InvalidInput
from initflow.schema.types import UserError


def user_errors(error: InvalidInput) -> list[UserError]:
    return [UserError(field=list(p.field), message=p.message, code=p.code) for p in error.problems]
