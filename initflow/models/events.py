"""The replay log: one row per progress event, ``seq`` 1, 2, 3 … per project."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from initflow.models.projects import Project


class ProgressEventRecord(Model):
    id = fields.BigIntField(primary_key=True)
    project: fields.ForeignKeyRelation[Project] = fields.ForeignKeyField(
        "models.Project", related_name="events", on_delete=fields.CASCADE
    )
    seq = fields.IntField()
    type = fields.CharField(max_length=40)
    payload = fields.TextField()
    """The event as JSON text, stored as written. Never queried inside the database: as
    ``jsonb`` Postgres parsed and compressed every row, a fifth of its CPU per
    transition (``bench/runner_throughput.py``)."""
    created_at = fields.DatetimeField()

    class Meta:
        table = "progress_events"
        unique_together = (("project", "seq"),)
