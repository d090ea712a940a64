"""Query, Mutation and Subscription: the public contract (see docs/api.md)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from functools import cached_property
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.types import ExecutionContext

from initflow.errors import InitflowError
from initflow.resolvers.cancel_initialization import cancel_initialization
from initflow.resolvers.create_project import create_project
from initflow.resolvers.init_progress import init_progress
from initflow.resolvers.project import project
from initflow.resolvers.project_status import project_status
from initflow.resolvers.projects import projects
from initflow.resolvers.retry_initialization import retry_initialization
from initflow.resolvers.templates import templates
from initflow.resolvers.viewer import viewer
from initflow.schema.errors import InitflowErrors
from initflow.schema.extensions_runner import (
    PreparedExtensionsRunner,
    clean_result_work,
    stream_result_hooks,
)
from initflow.schema.project import Project
from initflow.schema.shared_events import SharedEventExecutor
from initflow.schema.types import (
    CreateProjectPayload,
    InitializationPayload,
    InitProgressEvent,
    ProjectConnection,
    ProjectStatus,
    Template,
    User,
)

MAX_DEPTH = 10
MAX_ALIASES = 15
MAX_TOKENS = 2000
VALIDATION_CACHE_SIZE = 256

# Built once: the rule classes are part of the validation cache's key, and the
# limiter extensions build a new class per instance, so limiters made per request
# would make every cache lookup miss (a full validation, ~4 ms, per request).
LIMIT_RULES = (
    *QueryDepthLimiter(max_depth=MAX_DEPTH).validation_rules,
    *MaxAliasesLimiter(max_alias_count=MAX_ALIASES).validation_rules,
)


@strawberry.type
class Query:
    project_status: ProjectStatus = strawberry.field(
        resolver=project_status, description="Persisted status; NOT_FOUND when not yours."
    )
    project: Project | None = strawberry.field(resolver=project)
    projects: ProjectConnection = strawberry.field(resolver=projects)
    templates: list[Template] = strawberry.field(resolver=templates)
    viewer: User = strawberry.field(resolver=viewer)


@strawberry.type
class Mutation:
    create_project: CreateProjectPayload = strawberry.mutation(resolver=create_project)
    retry_initialization: InitializationPayload = strawberry.mutation(resolver=retry_initialization)
    cancel_initialization: InitializationPayload = strawberry.mutation(
        resolver=cancel_initialization
    )


@strawberry.type
class Subscription:
    init_progress: AsyncGenerator[InitProgressEvent, None] = strawberry.subscription(
        resolver=init_progress
    )


class InitflowSchema(strawberry.Schema):
    """Strawberry's schema with our error logging and our per-result extension runner.

    Logs only errors nobody expected (a bad token or a missing project is not news);
    streamed results go through ``PreparedExtensionsRunner``, and may skip it
    altogether through a ``LiveRelay`` when ``relays_live_results`` holds.
    """

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        unexpected = [
            e
            for e in errors
            if e.original_error is not None and not isinstance(e.original_error, InitflowError)
        ]
        super().process_errors(unexpected, execution_context)

    @cached_property
    def relays_live_results(self) -> bool:
        """Whether a live result without errors may bypass the per-result path (live_relay)."""
        extensions = self.get_extensions()
        hooks, with_results = clean_result_work(extensions, stream_result_hooks(extensions))
        return not (hooks or with_results)

    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        return PreparedExtensionsRunner(execution_context, extensions)


def build_schema(*, introspection: bool = True) -> strawberry.Schema:
    """The schema with its limits; production turns introspection off."""
    extensions: list[Any] = [
        InitflowErrors,
        lambda: AddValidationRules(list(LIMIT_RULES)),
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        # Clients send the same few documents again and again (every subscription,
        # every dashboard poll): validate each distinct one once. (No ParserCache:
        # it would parse past MaxTokensLimiter's bound.)
        lambda: ValidationCache(maxsize=VALIDATION_CACHE_SIZE),
    ]
    if not introspection:
        extensions.append(DisableIntrospection)
    return InitflowSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        execution_context_class=SharedEventExecutor,
    )


schema = build_schema()
