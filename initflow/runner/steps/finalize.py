"""Step 7: owner membership, audit entry and notification; the executor then marks ACTIVE.

Every effect is keyed (membership per project and user, the audit entry's
dedupe key, the webhook's idempotency key), so a re-run adds nothing.
"""

from __future__ import annotations

from initflow.clock import utcnow
from initflow.models import AuditEntry, ProjectMember
from initflow.runner.registry import StepContext, StepResult
from initflow.services.webhooks import record_delivery


class Finalize:
    name = "finalize"

    async def run(self, ctx: StepContext) -> StepResult:
        project = ctx.project
        await ctx.progress(0, 2, "Granting owner membership")
        async with ctx.transaction() as connection:
            now = utcnow()
            await ProjectMember.get_or_create(
                project_id=project.id,
                user_id=project.owner_id,
                defaults={"role": "owner", "created_at": now},
                using_db=connection,
            )
            await AuditEntry.get_or_create(
                dedupe_key=f"{project.id}:initialized",
                defaults={
                    "project_id": project.id,
                    "actor": "initflow",
                    "action": "project.initialized",
                    "details": {"template": project.template, "slug": project.slug},
                    "created_at": now,
                },
                using_db=connection,
            )
            notify = await record_delivery(
                ctx.settings, project.id, "initialization.completed", connection
            )
        await ctx.progress(1, 2, "Audit entry written")
        message = "Project ready"
        if notify:
            message += "; completion notification queued"
        return StepResult(message=message)
