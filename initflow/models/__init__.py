"""Tortoise models: the persisted truth of initflow (see docs/data-model.md)."""

from initflow.models.effects import (
    AuditEntry,
    Environment,
    GitopsResource,
    ProjectMember,
    Repository,
    WebhookDelivery,
)
from initflow.models.events import ProgressEventRecord
from initflow.models.projects import InitializationStep, Project
from initflow.models.users import User

__all__ = [
    "AuditEntry",
    "Environment",
    "GitopsResource",
    "InitializationStep",
    "ProgressEventRecord",
    "Project",
    "ProjectMember",
    "Repository",
    "User",
    "WebhookDelivery",
]
