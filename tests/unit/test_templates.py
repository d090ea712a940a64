"""Templates: the catalog, parameter validation and deterministic, contained rendering."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from initflow.errors import ConfigurationError, InvalidInput, PermanentStepError
from initflow.services.templates import (
    Template,
    TemplateCatalog,
    _compiled,
    render_template,
    validate_parameters,
)


def context_for(
    template: Template, parameters: dict[str, object] | None = None
) -> dict[str, object]:
    values = validate_parameters(template, parameters)
    return {
        "project_name": 'Shop <Front> & "Co"',
        "slug": "shop-front",
        "project_id": "0b7c2f4e-1d1a-4c3b-9a55-6f1b2f3e4d5c",
        "template": template.name,
        "environments": ["staging", "production"],
        "parameters": values,
        **values,
    }


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(oct(path.stat().st_mode & 0o777).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def write_template(root: Path, name: str, manifest: str, files: dict[str, str]) -> Path:
    folder = root / name
    (folder / "files").mkdir(parents=True)
    (folder / "template.toml").write_text(manifest)
    for relative, content in files.items():
        path = folder / "files" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return folder


@pytest.fixture
def catalog() -> TemplateCatalog:
    return TemplateCatalog.builtin()


def problem_codes(error: InvalidInput) -> dict[tuple[str, ...], str]:
    return {problem.field: problem.code for problem in error.problems}


# --------------------------------------------------------------------------- catalog


def test_builtin_catalog_lists_both_templates_sorted_with_their_parameters(
    catalog: TemplateCatalog,
) -> None:
    templates = catalog.list()
    assert [t.name for t in templates] == ["python-service", "static-site"]
    python, static = templates
    assert [p.name for p in python.parameters] == ["description", "python_version", "port"]
    port = python.parameters[2]
    assert (port.type, port.required, port.default) == ("integer", False, 8080)
    assert python.parameters[1].pattern == r"^3\.\d{1,2}$"
    assert [p.name for p in static.parameters] == ["description", "tagline"]
    assert static.parameters[1].max_length == 120
    assert all(t.title and t.description for t in templates)


def test_unknown_template_names_the_available_ones(catalog: TemplateCatalog) -> None:
    with pytest.raises(InvalidInput) as raised:
        catalog.get("rust-cli")
    (problem,) = raised.value.problems
    assert problem.field == ("template",)
    assert problem.code == "UNKNOWN_TEMPLATE"
    assert problem.message == (
        "Unknown template 'rust-cli'. Available: python-service, static-site"
    )


def test_later_roots_override_earlier_templates_by_name(tmp_path: Path) -> None:
    manifest = 'title = "Mine"\n'
    write_template(tmp_path / "a", "python-service", manifest, {"x.txt": "x"})
    write_template(tmp_path / "a", "extra", manifest, {"x.txt": "x"})
    builtin_root = TemplateCatalog.builtin().roots[0]
    catalog = TemplateCatalog([builtin_root, tmp_path / "a"])
    assert [t.name for t in catalog.list()] == ["extra", "python-service", "static-site"]
    assert catalog.get("python-service").title == "Mine"


def test_malformed_manifest_is_a_configuration_error(tmp_path: Path) -> None:
    manifest = 'title = "Bad"\n[[parameters]]\nname = "port"\ntype = "integer"\ndefault = "x"\n'
    write_template(tmp_path, "bad", manifest, {})
    with pytest.raises(ConfigurationError, match="default of parameter 'port'"):
        TemplateCatalog([tmp_path])


# --------------------------------------------------------------------------- parameters


def test_validate_parameters_fills_in_defaults(catalog: TemplateCatalog) -> None:
    python = catalog.get("python-service")
    assert validate_parameters(python, None) == {
        "description": "A Python web service",
        "python_version": "3.11",
        "port": 8080,
    }
    assert validate_parameters(python, {"port": 9000, "python_version": "3.12"})["port"] == 9000
    assert validate_parameters(catalog.get("static-site"), {})["tagline"] is None


def test_validate_parameters_collects_every_problem_with_its_field_and_code(
    catalog: TemplateCatalog,
) -> None:
    python = catalog.get("python-service")
    with pytest.raises(InvalidInput) as raised:
        validate_parameters(
            python, {"port": "8080", "python_version": "2.7", "colour": "blue", "debug": True}
        )
    assert problem_codes(raised.value) == {
        ("parameters", "port"): "INVALID_TYPE",
        ("parameters", "python_version"): "INVALID_VALUE",
        ("parameters", "colour"): "UNKNOWN_PARAMETER",
        ("parameters", "debug"): "UNKNOWN_PARAMETER",
    }
    messages = [problem.message for problem in raised.value.problems]
    assert "Parameter 'port' must be an integer." in messages


def test_a_boolean_is_not_an_integer(catalog: TemplateCatalog) -> None:
    with pytest.raises(InvalidInput) as raised:
        validate_parameters(catalog.get("python-service"), {"port": True})
    assert problem_codes(raised.value) == {("parameters", "port"): "INVALID_TYPE"}


def test_strings_are_checked_for_length_and_control_characters(catalog: TemplateCatalog) -> None:
    static = catalog.get("static-site")
    with pytest.raises(InvalidInput) as raised:
        validate_parameters(static, {"tagline": "x" * 121, "description": "two\nlines"})
    assert problem_codes(raised.value) == {
        ("parameters", "tagline"): "INVALID_VALUE",
        ("parameters", "description"): "INVALID_VALUE",
    }
    with pytest.raises(InvalidInput, match="at most 200 characters"):
        validate_parameters(static, {"description": "x" * 201})


def test_missing_required_parameter_is_reported(tmp_path: Path) -> None:
    manifest = (
        'title = "T"\n[[parameters]]\nname = "owner"\ntype = "string"\nrequired = true\n'
        '[[parameters]]\nname = "replicas"\ntype = "integer"\nrequired = true\n'
    )
    write_template(tmp_path, "needs-owner", manifest, {})
    template = TemplateCatalog([tmp_path]).get("needs-owner")
    with pytest.raises(InvalidInput) as raised:
        validate_parameters(template, {"replicas": 2.5})
    assert problem_codes(raised.value) == {
        ("parameters", "owner"): "REQUIRED",
        ("parameters", "replicas"): "INVALID_TYPE",
    }
    assert raised.value.problems[0].message == "Parameter 'owner' is required."


# --------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("name", ["python-service", "static-site"])
async def test_builtin_templates_render_with_only_defaults(
    catalog: TemplateCatalog, tmp_path: Path, name: str
) -> None:
    template = catalog.get(name)
    written = await render_template(template, context_for(template), tmp_path / "out")
    assert written == sorted(written)
    assert 8 <= len(written) <= 12
    assert not any(path.endswith(".j2") for path in written)
    assert {"README.md", "Dockerfile", "deploy/base/kustomization.yaml"} <= set(written)
    assert (
        sorted(
            p.relative_to(tmp_path / "out").as_posix()
            for p in (tmp_path / "out").rglob("*")
            if p.is_file()
        )
        == written
    )
    for path in written:
        assert (tmp_path / "out" / path).stat().st_mode & 0o777 == 0o644
    deployment = (tmp_path / "out" / "deploy/base/deployment.yaml").read_text()
    assert "name: shop-front" in deployment


async def test_rendering_twice_yields_identical_bytes(
    catalog: TemplateCatalog, tmp_path: Path
) -> None:
    template = catalog.get("python-service")
    context = context_for(template, {"port": 9090})
    await render_template(template, context, tmp_path / "first")
    await render_template(template, context, tmp_path / "second")
    assert tree_digest(tmp_path / "first") == tree_digest(tmp_path / "second")


async def test_rendering_over_a_stale_destination_and_temp_dir_converges(
    catalog: TemplateCatalog, tmp_path: Path
) -> None:
    template = catalog.get("static-site")
    context = context_for(template, {"tagline": "Fresh"})
    await render_template(template, context, tmp_path / "clean")

    destination = tmp_path / "site"
    (destination / "old-dir").mkdir(parents=True)
    (destination / "old-dir" / "leftover.txt").write_text("from a previous run")
    (destination / "README.md").write_text("stale")
    stale_temp = tmp_path / ".site.tmp"
    (stale_temp / "half").mkdir(parents=True)
    (stale_temp / "half" / "written.txt").write_text("crashed mid-render")

    written = await render_template(template, context, destination)
    assert tree_digest(destination) == tree_digest(tmp_path / "clean")
    assert not stale_temp.exists()
    assert not (destination / "old-dir").exists()
    assert entries(tmp_path) == ["clean", "site"]
    assert "site/index.html" in written


async def test_html_output_escapes_the_project_name_and_tagline(
    catalog: TemplateCatalog, tmp_path: Path
) -> None:
    template = catalog.get("static-site")
    await render_template(
        template, context_for(template, {"tagline": "<script>x</script>"}), tmp_path / "o"
    )
    html = (tmp_path / "o" / "site/index.html").read_text()
    assert "<h1>Shop &lt;Front&gt; &amp; &#34;Co&#34;</h1>" in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html
    assert "<script>" not in html


async def test_python_service_renders_a_project_whose_own_tests_pass(
    catalog: TemplateCatalog, tmp_path: Path
) -> None:
    template = catalog.get("python-service")
    project = tmp_path / "project"
    await render_template(template, context_for(template), project)
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "shop-front"
    assert pyproject["project"]["requires-python"] == ">=3.11"
    assert (project / ".gitignore").is_file()
    result = subprocess.run(  # noqa: ASYNC221 (a short, self-contained child test run)
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},  # plain pytest only
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


async def test_on_progress_reports_each_file_with_the_total(
    catalog: TemplateCatalog, tmp_path: Path
) -> None:
    template = catalog.get("static-site")
    calls: list[tuple[int, int, str]] = []

    async def record(done: int, total: int, path: str) -> None:
        calls.append((done, total, path))

    written = await render_template(template, context_for(template), tmp_path / "o", record)
    assert [call[0] for call in calls] == list(range(1, len(written) + 1))
    assert {call[1] for call in calls} == {len(written)}
    assert sorted(call[2] for call in calls) == written


async def test_a_second_run_of_a_template_compiles_nothing_again(
    catalog: TemplateCatalog, tmp_path: Path
) -> None:
    template = catalog.get("static-site")
    context = context_for(template)
    await render_template(template, context, tmp_path / "first")
    compiled = _compiled.cache_info().currsize
    await render_template(template, context_for(template, {"tagline": "Other"}), tmp_path / "b")
    assert _compiled.cache_info().currsize == compiled
    assert "Other" in (tmp_path / "b" / "site/index.html").read_text()


async def test_a_template_file_edited_between_runs_renders_its_new_content(
    tmp_path: Path,
) -> None:
    folder = write_template(
        tmp_path / "templates", "edited", 'title = "Edited"\n', {"a.txt.j2": "one {{ slug }}"}
    )
    template = TemplateCatalog([folder.parent]).get("edited")
    await render_template(template, {"slug": "x"}, tmp_path / "first")
    (folder / "files" / "a.txt.j2").write_text("two {{ slug }}")
    await render_template(template, {"slug": "x"}, tmp_path / "second")
    assert (tmp_path / "first" / "a.txt").read_text() == "one x"
    assert (tmp_path / "second" / "a.txt").read_text() == "two x"


async def test_file_and_folder_names_are_rendered(tmp_path: Path) -> None:
    template = write_template(
        tmp_path / "templates",
        "named",
        'title = "Named"\n',
        {"{{ slug }}/{{ slug }}.txt.j2": "hello {{ slug }}\n", "{{ '.env' }}": "{{ raw }}"},
    )
    loaded = TemplateCatalog([template.parent]).get("named")
    written = await render_template(loaded, {"slug": "demo"}, tmp_path / "out")
    assert written == [".env", "demo/demo.txt"]
    assert (tmp_path / "out" / "demo/demo.txt").read_bytes() == b"hello demo\n"
    assert (tmp_path / "out" / ".env").read_bytes() == b"{{ raw }}"  # copied, not rendered


@pytest.mark.parametrize(
    "file_name", ["{{ up }}/x.txt", "{{ up }}.j2", "{{ nothing }}.j2", "{{ root }}etc/x"]
)
async def test_a_path_that_renders_outside_the_destination_is_refused(
    tmp_path: Path, file_name: str
) -> None:
    root = tmp_path / "templates"
    write_template(root, "evil", 'title = "Evil"\n', {"ok.txt": "fine", file_name: "x"})
    template = TemplateCatalog([root]).get("evil")
    sandbox = tmp_path / "sandbox"
    destination = sandbox / "project" / "out"
    context = {"up": "..", "nothing": "", "root": "/"}
    with pytest.raises(PermanentStepError) as raised:
        await render_template(template, context, destination)
    assert raised.value.code == "TEMPLATE_INVALID_PATH"
    assert "renders to the path" in raised.value.message
    leftovers = [p for p in sandbox.rglob("*") if p.is_file()] if sandbox.exists() else []
    assert leftovers == []
    assert not (tmp_path / "x").exists()
    assert not (sandbox / "project" / "x").exists()


async def test_template_errors_are_permanent_with_the_file_name(tmp_path: Path) -> None:
    root = tmp_path / "templates"
    write_template(root, "broken", 'title = "Broken"\n', {"a.txt.j2": "{{ missing_value }}"})
    template = TemplateCatalog([root]).get("broken")
    with pytest.raises(PermanentStepError) as raised:
        await render_template(template, {}, tmp_path / "out")
    assert raised.value.code == "TEMPLATE_RENDER_FAILED"
    assert raised.value.message.startswith(
        "Template 'broken' failed to render file 'a.txt.j2': 'missing_value' is undefined"
    )
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / ".out.tmp").exists()
