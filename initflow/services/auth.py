"""Users and bearer tokens. Tokens are shown once; only their SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets

from tortoise.exceptions import IntegrityError

from initflow.errors import InvalidInput, Unauthenticated
from initflow.models import User

TOKEN_PREFIX = "ifl_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def create_user(name: str, *, admin: bool = False) -> tuple[User, str]:
    """Create a user; returns it with its token (the only time the token exists)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidInput.one(["name"], "User name must be 1 to 100 characters.", "INVALID_VALUE")
    token = new_token()
    try:
        user = await User.create(name=name, token_hash=hash_token(token), is_admin=admin)
    except IntegrityError as exc:
        raise InvalidInput.one(["name"], f"User '{name}' already exists.", "NAME_TAKEN") from exc
    return user, token


async def ensure_admin(name: str = "admin") -> str | None:
    """Create the first admin on an empty database; returns its token, or None if users exist."""
    if await User.all().exists():
        return None
    _, token = await create_user(name, admin=True)
    return token


def parse_authorization(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate(token: str | None) -> User:
    if not token:
        raise Unauthenticated()
    user = await User.filter(token_hash=hash_token(token)).first()
    if user is None:
        raise Unauthenticated("Invalid token.")
    return user
