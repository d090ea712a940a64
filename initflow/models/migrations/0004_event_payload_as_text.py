"""Event payloads as text: stored as written, never parsed by the database.

Tortoise's AlterField refuses to change a field's class (JSONField → TextField),
although its schema editors can change the column type (Postgres: ALTER COLUMN
… TYPE TEXT, jsonb converts implicitly; SQLite: the table is rebuilt). This
operation asks them directly, and restores the (project, seq) uniqueness that
Tortoise's SQLite rebuild drops.
"""

from typing import Any

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class AlterFieldClass(ops.AlterField):
    async def database_forward(
        self, app_label: str, old_state: Any, new_state: Any, state_editor: Any = None
    ) -> None:
        if not state_editor:
            return
        old_model = old_state.apps.get_model(f"{app_label}.{self.model_name}")
        new_model = new_state.apps.get_model(f"{app_label}.{self.model_name}")
        await state_editor._alter_field(
            new_model, old_model._meta.fields_map[self.name], new_model._meta.fields_map[self.name]
        )
        if state_editor.DIALECT == "sqlite":
            await state_editor._run_sql(
                "CREATE UNIQUE INDEX IF NOT EXISTS uid_progress_ev_project_cc3de9"
                " ON progress_events (project_id, seq)"
            )


class Migration(migrations.Migration):
    dependencies = [("models", "0003_step_next_attempt_at")]

    initial = False

    operations = [
        AlterFieldClass(
            model_name="ProgressEventRecord",
            name="payload",
            field=fields.TextField(unique=False),
        ),
    ]
