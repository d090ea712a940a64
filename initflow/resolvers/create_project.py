from __future__ import annotations

import strawberry
from strawberry.scalars import JSON

from initflow.errors import InvalidInput
from initflow.resolvers.user_errors import user_errors
from initflow.schema.context import Info
from initflow.schema.project import Project
from initflow.schema.types import CreateProjectPayload, UserError
from initflow.services.projects import CreateProjectRequest


@strawberry.input
class CreateProjectInput:
    name: str
    template: str
    parameters: JSON | None = None
    environments: list[str] | None = strawberry.field(
        default=None,
        description="Defaults to development, staging, production; [] creates none.",
    )
    idempotency_key: str | None = strawberry.field(
        default=None, description="The same key from the same user returns the same project."
    )


async def create_project(info: Info, input: CreateProjectInput) -> CreateProjectPayload:
    user = info.context.require_user()
    if input.parameters is not None and not isinstance(input.parameters, dict):
        return CreateProjectPayload(
            project=None,
            user_errors=[
                UserError(
                    field=["parameters"],
                    message="Parameters must be an object of name: value.",
                    code="INVALID_TYPE",
                )
            ],
        )
    request = CreateProjectRequest(
        name=input.name,
        template=input.template,
        parameters=input.parameters,
        environments=input.environments,
        idempotency_key=input.idempotency_key,
    )
    try:
        row = await info.context.services.projects.create(user, request)
    except InvalidInput as exc:
        return CreateProjectPayload(project=None, user_errors=user_errors(exc))
    return CreateProjectPayload(project=Project.from_row(row), user_errors=[])
