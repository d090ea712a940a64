"""initflow's exceptions: one base, each with a stable ``code``.

    InitflowError                       INTERNAL_SERVER_ERROR
    ├── NotFound                        NOT_FOUND (missing and not-yours look the same)
    ├── Unauthenticated                 UNAUTHENTICATED
    ├── InvalidInput                    BAD_USER_INPUT (carries field-level problems)
    ├── ConfigurationError              CONFIGURATION_ERROR
    ├── LeaseLost                       LEASE_LOST (the executor must stop writing)
    └── StepError                       STEP_FAILED
        ├── TransientStepError          retried with backoff
        └── PermanentStepError          fails the step and the project

The docstring of each class is its default message, so ``raise NotFound()``
already says something a person can read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class InitflowError(Exception):
    """Something went wrong inside initflow."""

    code = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        self.message = message or (self.__doc__ or self.code).strip()
        if code is not None:
            self.code = code
        super().__init__(self.message)

    @property
    def extensions(self) -> dict[str, object]:
        """What GraphQL clients see in ``errors[].extensions`` (graphql-core reads this)."""
        return {"code": self.code}


class NotFound(InitflowError):
    """Not found."""

    code = "NOT_FOUND"


class Unauthenticated(InitflowError):
    """Authentication required: send `Authorization: Bearer <token>`."""

    code = "UNAUTHENTICATED"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input, addressed by its field path."""

    field: tuple[str, ...]
    message: str
    code: str


class InvalidInput(InitflowError):
    """The input is not valid."""

    code = "BAD_USER_INPUT"

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(p.message for p in self.problems) or None)

    @classmethod
    def one(cls, field: Sequence[str], message: str, code: str) -> InvalidInput:
        return cls([Problem(tuple(field), message, code)])


class ConfigurationError(InitflowError):
    """The service is misconfigured."""

    code = "CONFIGURATION_ERROR"


class LeaseLost(InitflowError):
    """This runner no longer holds the project's lease; it must stop without writing."""

    code = "LEASE_LOST"


class StepError(InitflowError):
    """An initialization step failed."""

    code = "STEP_FAILED"


class TransientStepError(StepError):
    """A temporary problem; the step will be tried again."""

    code = "STEP_TRANSIENT"


class PermanentStepError(StepError):
    """The step cannot succeed with these inputs."""

    code = "STEP_FAILED"
