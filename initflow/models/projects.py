"""Projects, their lease (who executes the run) and their initialization steps.

The lease lives on the project row: ``lease_owner`` is the executing instance,
``lease_token`` a fencing counter bumped on every claim, ``lease_expires_at``
renewed by the heartbeat. ``last_seq`` is the sequence number of the project's
latest progress event; every event insert advances it in the same transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from initflow.models.users import User

from initflow.states import ProjectState, StepState


class Project(Model):
    id = fields.UUIDField(primary_key=True)
    owner: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="projects", on_delete=fields.RESTRICT
    )
    name = fields.CharField(max_length=100)
    slug = fields.CharField(max_length=100)
    template = fields.CharField(max_length=100)
    parameters: fields.JSONField[dict[str, Any]] = fields.JSONField(default=dict)
    environment_names: fields.JSONField[list[str]] = fields.JSONField(default=list)
    status = fields.CharEnumField(ProjectState, max_length=20, default=ProjectState.INITIALIZING)
    progress = fields.IntField(default=0)
    initialization_error = fields.TextField(null=True)
    idempotency_key = fields.CharField(max_length=200, null=True)
    last_seq = fields.IntField(default=0)
    lease_owner = fields.CharField(max_length=100, null=True)
    lease_token = fields.IntField(default=0)
    lease_expires_at = fields.DatetimeField(null=True)
    next_attempt_at = fields.DatetimeField(null=True)
    run_attempts = fields.IntField(default=0)
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()
    finished_at = fields.DatetimeField(null=True)

    class Meta:
        table = "projects"
        unique_together = (("owner", "slug"), ("owner", "idempotency_key"))
        indexes = (("status", "next_attempt_at"), ("owner_id", "created_at"))


class InitializationStep(Model):
    id = fields.IntField(primary_key=True)
    project: fields.ForeignKeyRelation[Project] = fields.ForeignKeyField(
        "models.Project", related_name="steps", on_delete=fields.CASCADE
    )
    name = fields.CharField(max_length=50)
    position = fields.IntField()
    status = fields.CharEnumField(StepState, max_length=20, default=StepState.PENDING)
    progress = fields.IntField(default=0)
    message = fields.CharField(max_length=500, null=True)
    attempts = fields.IntField(default=0)
    started_at = fields.DatetimeField(null=True)
    completed_at = fields.DatetimeField(null=True)
    error_code = fields.CharField(max_length=50, null=True)
    error_message = fields.TextField(null=True)
    checkpoint: fields.JSONField[dict[str, Any]] = fields.JSONField(default=dict)
    next_attempt_at = fields.DatetimeField(null=True)
    updated_at = fields.DatetimeField()

    class Meta:
        table = "initialization_steps"
        unique_together = (("project", "name"), ("project", "position"))
