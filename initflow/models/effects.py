"""What the steps create. Each has the unique key that makes its step idempotent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from initflow.models.projects import Project
    from initflow.models.users import User


class Environment(Model):
    id = fields.IntField(primary_key=True)
    project: fields.ForeignKeyRelation[Project] = fields.ForeignKeyField(
        "models.Project", related_name="environments", on_delete=fields.CASCADE
    )
    name = fields.CharField(max_length=40)
    position = fields.IntField()
    created_at = fields.DatetimeField()

    class Meta:
        table = "environments"
        unique_together = (("project", "name"),)


class Repository(Model):
    id = fields.IntField(primary_key=True)
    project: fields.OneToOneRelation[Project] = fields.OneToOneField(
        "models.Project", related_name="repository", on_delete=fields.CASCADE
    )
    path = fields.CharField(max_length=500)
    clone_url = fields.CharField(max_length=1000, default="")
    default_branch = fields.CharField(max_length=100, default="main")
    initial_commit = fields.CharField(max_length=40, null=True)
    head_commit = fields.CharField(max_length=40, null=True)
    created_at = fields.DatetimeField()

    class Meta:
        table = "repositories"


class GitopsResource(Model):
    id = fields.IntField(primary_key=True)
    project: fields.ForeignKeyRelation[Project] = fields.ForeignKeyField(
        "models.Project", related_name="gitops_resources", on_delete=fields.CASCADE
    )
    environment = fields.CharField(max_length=40)
    kind = fields.CharField(max_length=40)
    name = fields.CharField(max_length=200)
    path = fields.CharField(max_length=500)
    applied = fields.BooleanField(default=False)
    created_at = fields.DatetimeField()

    class Meta:
        table = "gitops_resources"
        unique_together = (("project", "environment", "kind"),)


class ProjectMember(Model):
    id = fields.IntField(primary_key=True)
    project: fields.ForeignKeyRelation[Project] = fields.ForeignKeyField(
        "models.Project", related_name="members", on_delete=fields.CASCADE
    )
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="memberships", on_delete=fields.CASCADE
    )
    role = fields.CharField(max_length=20)
    created_at = fields.DatetimeField()

    class Meta:
        table = "project_members"
        unique_together = (("project", "user"),)


class AuditEntry(Model):
    """``dedupe_key`` makes an entry written by a re-run step land once."""

    id = fields.BigIntField(primary_key=True)
    project: fields.ForeignKeyNullableRelation[Project] = fields.ForeignKeyField(
        "models.Project", related_name="audit_entries", null=True, on_delete=fields.SET_NULL
    )
    actor = fields.CharField(max_length=100)
    action = fields.CharField(max_length=50)
    details: fields.JSONField[dict[str, Any]] = fields.JSONField(default=dict)
    dedupe_key = fields.CharField(max_length=200, null=True, unique=True)
    created_at = fields.DatetimeField()

    class Meta:
        table = "audit_log"
        indexes = (("project_id", "created_at"),)


class WebhookDelivery(Model):
    id = fields.BigIntField(primary_key=True)
    project: fields.ForeignKeyRelation[Project] = fields.ForeignKeyField(
        "models.Project", related_name="webhook_deliveries", on_delete=fields.CASCADE
    )
    idempotency_key = fields.CharField(max_length=200, unique=True)
    event = fields.CharField(max_length=50)
    url = fields.CharField(max_length=1000)
    status = fields.CharField(max_length=20, default="pending")
    attempts = fields.IntField(default=0)
    last_error = fields.TextField(null=True)
    next_attempt_at = fields.DatetimeField(null=True)
    delivered_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField()

    class Meta:
        table = "webhook_deliveries"
