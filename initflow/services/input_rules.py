"""Input rules, written once, used by the API, the CLI and the dashboard alike.

Each rule returns the normalised value or adds a ``Problem`` a person can act on.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from initflow.errors import Problem

NAME_MAX = 100
SLUG_MAX = 63
ENVIRONMENT_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,29}$")
ENVIRONMENTS_MAX = 10
DEFAULT_ENVIRONMENTS = ("development", "staging", "production")
IDEMPOTENCY_KEY_MAX = 200


def has_control_characters(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in text)


def slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return slug[:SLUG_MAX].rstrip("-")


def check_project_name(name: str, problems: list[Problem]) -> tuple[str, str]:
    """Returns (name, slug); problems name the field ``name``."""
    field = ("name",)
    cleaned = name.strip()
    if not cleaned:
        problems.append(Problem(field, "Name must not be empty.", "REQUIRED"))
    elif len(cleaned) > NAME_MAX:
        problems.append(Problem(field, f"Name must be at most {NAME_MAX} characters.", "TOO_LONG"))
    elif has_control_characters(cleaned):
        problems.append(
            Problem(field, "Name must not contain control characters.", "INVALID_CHARACTERS")
        )
    elif "/" in cleaned or "\\" in cleaned or ".." in cleaned:
        problems.append(
            Problem(field, "Name must not contain '/', '\\' or '..'.", "INVALID_CHARACTERS")
        )
    else:
        slug = slugify(cleaned)
        if not slug:
            problems.append(
                Problem(field, "Name must contain at least one letter or digit.", "INVALID_NAME")
            )
        return cleaned, slug
    return cleaned, ""


def check_environments(
    environments: Sequence[str] | None, problems: list[Problem]
) -> tuple[str, ...]:
    if environments is None:
        return DEFAULT_ENVIRONMENTS
    if len(environments) > ENVIRONMENTS_MAX:
        problems.append(
            Problem(
                ("environments",),
                f"At most {ENVIRONMENTS_MAX} environments are allowed.",
                "TOO_MANY",
            )
        )
        return ()
    seen: list[str] = []
    for index, environment in enumerate(environments):
        field = ("environments", str(index))
        if not ENVIRONMENT_PATTERN.match(environment):
            problems.append(
                Problem(
                    field,
                    f"Environment name '{environment[:40]}' must start with a lowercase letter "
                    "and contain only lowercase letters, digits and '-' (at most 30).",
                    "INVALID_ENVIRONMENT",
                )
            )
        elif environment in seen:
            problems.append(
                Problem(field, f"Environment '{environment}' is listed twice.", "DUPLICATE")
            )
        else:
            seen.append(environment)
    return tuple(seen)


def check_idempotency_key(key: str | None, problems: list[Problem]) -> str | None:
    if key is None:
        return None
    field = ("idempotencyKey",)
    if not key or len(key) > IDEMPOTENCY_KEY_MAX or has_control_characters(key):
        problems.append(
            Problem(
                field,
                f"Idempotency key must be 1 to {IDEMPOTENCY_KEY_MAX} printable characters.",
                "INVALID_VALUE",
            )
        )
        return None
    return key
