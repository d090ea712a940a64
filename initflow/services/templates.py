"""Project templates: plain data folders rendered with Jinja2.

A template is ``<root>/<name>/template.toml`` plus a ``files/`` tree. Keeping templates as
data means adding one needs no code, and rendering is a pure function of the folder and the
context, so a retried step writes byte-identical output into the same place.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import re
import shutil
import tomllib
import unicodedata
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Final, NoReturn

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from initflow.errors import ConfigurationError, InvalidInput, PermanentStepError, Problem

PARAMETER_TYPES: Final = frozenset({"string", "boolean", "integer"})
DEFAULT_MAX_LENGTH: Final = 200
# Keys every render context already has; a parameter may not shadow them at the top level.
RESERVED_CONTEXT_KEYS: Final = frozenset(
    {"project_name", "slug", "project_id", "template", "environments", "parameters"}
)
TEMPLATE_SUFFIX: Final = ".j2"
FILE_MODE: Final = 0o644
DIR_MODE: Final = 0o755

ProgressCallback = Callable[[int, int, str], Awaitable[None]]

_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PARAMETER_KEYS: Final = frozenset(
    {"name", "type", "required", "default", "description", "pattern", "max_length"}
    | {"minimum", "maximum"}
)


@dataclass(frozen=True)
class TemplateParameter:
    """One declared input of a template, as read from ``[[parameters]]``."""

    name: str
    type: str
    required: bool
    default: object | None
    description: str | None
    pattern: str | None = None
    max_length: int | None = None
    minimum: int | None = None
    maximum: int | None = None


@dataclass(frozen=True)
class Template:
    """A template folder: its manifest and where its ``files/`` tree lives."""

    name: str
    title: str
    description: str | None
    parameters: tuple[TemplateParameter, ...]
    path: Path

    @property
    def files_path(self) -> Path:
        return self.path / "files"


# --------------------------------------------------------------------------- loading


def _config_error(template: str, message: str) -> NoReturn:
    raise ConfigurationError(f"Template '{template}' is malformed: {message}")


def _optional_str(template: str, table: Mapping[str, object], key: str, where: str) -> str | None:
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        _config_error(template, f"{where}: '{key}' must be a string.")
    return value


def _optional_int(template: str, table: Mapping[str, object], key: str, where: str) -> int | None:
    value = table.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        _config_error(template, f"{where}: '{key}' must be an integer.")
    return value


def _parse_constraints(
    template: str, raw: Mapping[str, object], name: str, kind: str
) -> tuple[str | None, int | None, int | None, int | None]:
    """``pattern``, ``max_length`` (strings) and ``minimum``, ``maximum`` (integers)."""
    where = f"parameter '{name}'"
    pattern = _optional_str(template, raw, "pattern", where)
    max_length = _optional_int(template, raw, "max_length", where)
    minimum = _optional_int(template, raw, "minimum", where)
    maximum = _optional_int(template, raw, "maximum", where)
    if (pattern is not None or max_length is not None) and kind != "string":
        _config_error(template, f"{where}: 'pattern'/'max_length' need type string.")
    if (minimum is not None or maximum is not None) and kind != "integer":
        _config_error(template, f"{where}: 'minimum'/'maximum' need type integer.")
    if max_length is not None and max_length < 1:
        _config_error(template, f"{where}: 'max_length' must be positive.")
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            _config_error(template, f"{where}: invalid 'pattern': {exc}.")
    return pattern, max_length, minimum, maximum


def _parse_parameter(template: str, raw: object, index: int) -> TemplateParameter:
    where = f"parameters[{index}]"
    if not isinstance(raw, dict):
        _config_error(template, f"{where} must be a table.")
    unknown = sorted(set(raw) - _PARAMETER_KEYS)
    if unknown:
        _config_error(template, f"{where} has unknown keys: {', '.join(unknown)}.")
    name = raw.get("name")
    if not isinstance(name, str) or not _PARAMETER_NAME.fullmatch(name):
        _config_error(template, f"{where}: 'name' must be an identifier.")
    if name in RESERVED_CONTEXT_KEYS:
        _config_error(template, f"parameter '{name}' would shadow a built-in context key.")
    kind = raw.get("type")
    if kind not in PARAMETER_TYPES:
        _config_error(
            template, f"parameter '{name}': 'type' must be one of {sorted(PARAMETER_TYPES)}."
        )
    required = raw.get("required", False)
    if not isinstance(required, bool):
        _config_error(template, f"parameter '{name}': 'required' must be true or false.")
    pattern, max_length, minimum, maximum = _parse_constraints(template, raw, name, str(kind))
    parameter = TemplateParameter(
        name=name,
        type=str(kind),
        required=required,
        default=raw.get("default"),
        description=_optional_str(template, raw, "description", f"parameter '{name}'"),
        pattern=pattern,
        max_length=max_length,
        minimum=minimum,
        maximum=maximum,
    )
    if parameter.default is not None:
        problem = _value_problem(parameter, parameter.default)
        if problem is not None:
            _config_error(template, f"the default of parameter '{name}' is invalid: {problem[1]}")
    return parameter


def load_template(path: Path) -> Template:
    """Read one template folder; a malformed one is a deployment mistake, not user error."""
    name = path.name
    if not _TEMPLATE_NAME.fullmatch(name):
        _config_error(name, f"folder name must match {_TEMPLATE_NAME.pattern}.")
    manifest = path / "template.toml"
    try:
        with manifest.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        _config_error(name, f"cannot read {manifest}: {exc}")
    title = data.get("title")
    if not isinstance(title, str) or not title.strip():
        _config_error(name, "'title' must be a non-empty string.")
    raw_parameters = data.get("parameters", [])
    if not isinstance(raw_parameters, list):
        _config_error(name, "'parameters' must be an array of tables ([[parameters]]).")
    parameters = tuple(_parse_parameter(name, raw, i) for i, raw in enumerate(raw_parameters))
    names = [p.name for p in parameters]
    if len(set(names)) != len(names):
        _config_error(name, "parameter names must be unique.")
    if not (path / "files").is_dir():
        _config_error(name, f"missing the files/ folder in {path}.")
    return Template(
        name=name,
        title=title,
        description=_optional_str(name, data, "description", "manifest"),
        parameters=parameters,
        path=path,
    )


class TemplateCatalog:
    """Templates found under a list of roots; a later root overrides an earlier one by name."""

    def __init__(self, roots: Sequence[Path]) -> None:
        found: dict[str, Template] = {}
        for root in roots:
            if not root.is_dir():
                raise ConfigurationError(f"Template folder {root} does not exist.")
            for child in sorted(root.iterdir()):
                if child.is_dir() and (child / "template.toml").is_file():
                    template = load_template(child)
                    found[template.name] = template
        self.roots: tuple[Path, ...] = tuple(roots)
        self._templates = dict(sorted(found.items()))

    @classmethod
    def builtin(cls) -> TemplateCatalog:
        """The templates shipped inside the package (``initflow/templates``)."""
        return cls([Path(__file__).resolve().parent.parent / "templates"])

    def list(self) -> builtins.list[Template]:
        return builtins.list(self._templates.values())

    def get(self, name: str) -> Template:
        template = self._templates.get(name)
        if template is None:
            available = ", ".join(self._templates) or "(none)"
            raise InvalidInput.one(
                ["template"],
                f"Unknown template '{name}'. Available: {available}",
                "UNKNOWN_TEMPLATE",
            )
        return template


# --------------------------------------------------------------------------- parameters


def _has_control_characters(value: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in value)


def _string_problem(parameter: TemplateParameter, value: str) -> tuple[str, str] | None:
    name = parameter.name
    if _has_control_characters(value):
        return (
            "INVALID_VALUE",
            f"Parameter '{name}' must not contain control characters such as newlines or tabs.",
        )
    limit = parameter.max_length or DEFAULT_MAX_LENGTH
    if len(value) > limit:
        return (
            "INVALID_VALUE",
            f"Parameter '{name}' must be at most {limit} characters long (got {len(value)}).",
        )
    # fullmatch: a pattern describes the whole value, anchored or not.
    if parameter.pattern is not None and not re.fullmatch(parameter.pattern, value):
        return ("INVALID_VALUE", f"Parameter '{name}' must match the pattern {parameter.pattern}.")
    return None


def _value_problem(parameter: TemplateParameter, value: object) -> tuple[str, str] | None:
    """The (code, message) of what is wrong with one provided value, or None."""
    name = parameter.name
    if parameter.type == "string":
        if not isinstance(value, str):
            return ("INVALID_TYPE", f"Parameter '{name}' must be a string.")
        return _string_problem(parameter, value)
    if parameter.type == "boolean":
        if not isinstance(value, bool):
            return ("INVALID_TYPE", f"Parameter '{name}' must be true or false.")
        return None
    return _integer_problem(parameter, value)


def _integer_problem(parameter: TemplateParameter, value: object) -> tuple[str, str] | None:
    name = parameter.name
    if isinstance(value, bool) or not isinstance(value, int):  # JSON: true is not a number
        return ("INVALID_TYPE", f"Parameter '{name}' must be an integer.")
    if parameter.minimum is not None and value < parameter.minimum:
        return ("INVALID_VALUE", f"Parameter '{name}' must be at least {parameter.minimum}.")
    if parameter.maximum is not None and value > parameter.maximum:
        return ("INVALID_VALUE", f"Parameter '{name}' must be at most {parameter.maximum}.")
    return None


def validate_parameters(
    template: Template, parameters: Mapping[str, object] | None
) -> dict[str, object]:
    """Check user parameters against the template and fill in defaults.

    Every declared parameter appears in the result (``None`` when optional, absent and without
    a default), so templates can test ``{% if tagline %}`` under StrictUndefined. A ``None``
    value counts as absent. All problems are reported at once.
    """
    given = dict(parameters or {})
    problems: list[Problem] = []
    result: dict[str, object] = {}
    for parameter in template.parameters:
        field = ("parameters", parameter.name)
        value = given.get(parameter.name)
        if value is None:
            if parameter.default is not None:
                result[parameter.name] = parameter.default
            elif parameter.required:
                message = f"Parameter '{parameter.name}' is required."
                problems.append(Problem(field, message, "REQUIRED"))
            else:
                result[parameter.name] = None
            continue
        problem = _value_problem(parameter, value)
        if problem is None:
            result[parameter.name] = value
        else:
            problems.append(Problem(field, problem[1], problem[0]))
    declared = [p.name for p in template.parameters]
    for name in sorted(str(key) for key in given if key not in declared):
        accepted = (
            f"Declared parameters: {', '.join(sorted(declared))}."
            if declared
            else "It takes no parameters."
        )
        message = f"Template '{template.name}' has no parameter '{name}'. {accepted}"
        problems.append(Problem(("parameters", name), message, "UNKNOWN_PARAMETER"))
    if problems:
        raise InvalidInput(problems)
    return result


# --------------------------------------------------------------------------- rendering

# Sandboxed: template folders may come from configurable roots. Autoescape is off because
# most outputs are not HTML; HTML templates escape explicitly with ``| e``.
_ENVIRONMENT = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
)
# `tojson` quotes a value for YAML/TOML/Python; keep non-ASCII readable and keys ordered.
_ENVIRONMENT.policies["json.dumps_kwargs"] = {"sort_keys": True, "ensure_ascii": False}
COMPILED_TEMPLATES_CACHED = 1024


@dataclass(frozen=True)
class _PlannedFile:
    source: Path
    source_name: str  # relative to files/, POSIX separators
    target: str  # rendered relative path, POSIX separators
    render: bool


def _render_failed(template: Template, source_name: str, exc: Exception) -> PermanentStepError:
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, jinja2.TemplateSyntaxError):
        detail = f"{detail} (line {exc.lineno})"
    return PermanentStepError(
        f"Template '{template.name}' failed to render file '{source_name}': {detail}",
        code="TEMPLATE_RENDER_FAILED",
    )


@lru_cache(maxsize=COMPILED_TEMPLATES_CACHED)
def _compiled(text: str) -> jinja2.Template:
    """Compiled once per distinct source text (every run of a template renders the same files).

    Compiling was most of a render's CPU (``bench/stream.py``'s worker), in a thread
    that holds the GIL the event loop needs. A compiled template is
    immutable and safe to render from several threads; the key is the text itself,
    so an edited template file is compiled anew.
    """
    return _ENVIRONMENT.from_string(text)


def _render_string(
    template: Template, source_name: str, text: str, context: Mapping[str, object]
) -> str:
    try:
        return _compiled(text).render(dict(context))
    except Exception as exc:  # any error raised while running template code is the template's
        raise _render_failed(template, source_name, exc) from exc


_PATH_RULES: Final[tuple[tuple[Callable[[str, list[str]], bool], str], ...]] = (
    (lambda path, _: not path.strip(), "is empty"),
    (
        lambda path, _: path.startswith("/") or "\\" in path or bool(re.match(r"[A-Za-z]:", path)),
        "is absolute or uses backslashes",
    ),
    (lambda path, _: _has_control_characters(path), "contains control characters"),
    (lambda _, parts: ".." in parts, "contains '..'"),
    (lambda _, parts: any(part in ("", ".") for part in parts), "has an empty or '.' component"),
    (lambda _, parts: any(part.lower() == ".git" for part in parts), "writes inside '.git'"),
)


def _path_problem(rendered: str) -> str | None:
    parts = rendered.split("/")
    return next((reason for rule, reason in _PATH_RULES if rule(rendered, parts)), None)


def _list_sources(template: Template) -> list[str]:
    root = template.files_path
    names: list[str] = []
    for directory, subdirectories, files in os.walk(root):
        for entry in (*subdirectories, *files):
            if (Path(directory) / entry).is_symlink():
                raise PermanentStepError(
                    f"Template '{template.name}' contains a symbolic link "
                    f"'{(Path(directory) / entry).relative_to(root).as_posix()}'; "
                    "templates may only contain regular files.",
                    code="TEMPLATE_INVALID",
                )
        names.extend((Path(directory) / name).relative_to(root).as_posix() for name in files)
    return sorted(names)


def _plan(template: Template, context: Mapping[str, object]) -> list[_PlannedFile]:
    """Render every target path first, so a bad path is refused before anything is written."""
    planned: list[_PlannedFile] = []
    for source_name in _list_sources(template):
        is_template = source_name.endswith(TEMPLATE_SUFFIX)
        rendered = _render_string(template, source_name, source_name, context)
        if is_template:
            rendered = rendered.removesuffix(TEMPLATE_SUFFIX)
        problem = _path_problem(rendered)
        if problem is not None:
            raise PermanentStepError(
                f"Template '{template.name}' file '{source_name}' renders to the path "
                f"{rendered!r}, which {problem}; rendered paths must stay inside the project.",
                code="TEMPLATE_INVALID_PATH",
            )
        planned.append(
            _PlannedFile(template.files_path / source_name, source_name, rendered, is_template)
        )
    _check_collisions(template, planned)
    return planned


def _check_collisions(template: Template, planned: Sequence[_PlannedFile]) -> None:
    owners: dict[str, str] = {}
    for item in planned:
        if item.target in owners:
            raise PermanentStepError(
                f"Template '{template.name}' files '{owners[item.target]}' and "
                f"'{item.source_name}' both render to '{item.target}'.",
                code="TEMPLATE_INVALID_PATH",
            )
        owners[item.target] = item.source_name
    for item in planned:
        parts = item.target.split("/")
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if prefix in owners:
                raise PermanentStepError(
                    f"Template '{template.name}' renders '{prefix}' both as a file (from "
                    f"'{owners[prefix]}') and as a folder (from '{item.source_name}').",
                    code="TEMPLATE_INVALID_PATH",
                )


def _file_bytes(template: Template, item: _PlannedFile, context: Mapping[str, object]) -> bytes:
    data = item.source.read_bytes()
    if not item.render:
        return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _render_failed(template, item.source_name, exc) from exc
    return _render_string(template, item.source_name, text, context).encode("utf-8")


def _write_file(root: Path, target: str, data: bytes) -> None:
    path = root / target
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(FILE_MODE)  # independent of the umask and of the template file's own mode


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _sibling(destination: Path, kind: str) -> Path:
    return destination.parent / f".{destination.name}.{kind}"


def _prepare(destination: Path) -> Path:
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = _sibling(destination, "tmp")
    _remove(temporary)  # left over from a crashed attempt
    _remove(_sibling(destination, "old"))
    temporary.mkdir(mode=DIR_MODE)
    return temporary


def _install(temporary: Path, destination: Path) -> None:
    """Swap the finished tree in; a crash at any point is cleaned up by the next render."""
    for directory, _, _ in os.walk(temporary):
        Path(directory).chmod(DIR_MODE)
    old = _sibling(destination, "old")
    if destination.exists() or destination.is_symlink():
        os.replace(destination, old)
    os.replace(temporary, destination)
    _remove(old)


async def render_template(
    template: Template,
    context: Mapping[str, object],
    destination: Path,
    on_progress: ProgressCallback | None = None,
) -> list[str]:
    """Render ``template`` into ``destination``, replacing whatever was there.

    Output is built in ``.<destination>.tmp`` next to it and swapped in at the end, so the
    destination is either the previous content or the complete new one. Callers must not
    render into the same destination concurrently. Returns the sorted relative paths written.
    """
    planned = await asyncio.to_thread(_plan, template, context)
    temporary = await asyncio.to_thread(_prepare, destination)
    try:
        total = len(planned)
        for done, item in enumerate(planned, start=1):
            data = await asyncio.to_thread(_file_bytes, template, item, context)
            await asyncio.to_thread(_write_file, temporary, item.target, data)
            if on_progress is not None:
                await on_progress(done, total, item.target)
        await asyncio.to_thread(_install, temporary, destination)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return sorted(item.target for item in planned)
