"""Channel templates: Jinja2 in a sandbox, a default per template name, overrides from config.

Each channel settings model names the templates it renders in `TEMPLATES` (name -> spec: the
default file in `templates/` and the output mode). A channel block may replace any of them:

    pricing-email:
      type: email
      template:
        subject: "[{{ topic }}] {{ customer.name or 'someone' }} needs help"
        html: {file: templates/pricing.html}     # relative to the config file

Why a sandbox: templates come from config, which people other than the code's authors edit
(and, later, `PUT /v1/config`); `ImmutableSandboxedEnvironment` (a `SandboxedEnvironment`)
keeps a template away from Python internals (`{{ ''.__class__.__mro__ }}`) and from mutating
what it is given. Why modes: the same `{{ description }}` must be escaped differently for HTML
(autoescape), for Slack mrkdwn (every `{{ ... }}` output goes through `escape_mrkdwn`, so only
the template's own literal text can mention or link), for chat services reached as plain text
(Apprise: mentions defused, markup left to each service's own escaping) and not at all for
plain text.

`StrictUndefined` turns a typo into an error with the template's name and line, found by
`deskbell config check` (which renders every template against sample requests) rather than as
an empty gap in every notification.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import CodeType
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict

from deskbell.channels.kit.mrkdwn import escape_mrkdwn
from deskbell.channels.kit.text import defuse_mentions, single_line, template_context
from deskbell.errors import TemplateError

if TYPE_CHECKING:
    from deskbell.channels.base import Message

TEMPLATE_DIR = Path(__file__).parent / "templates"


class Mode(StrEnum):
    TEXT = "text"  # raw: plain-text bodies, subjects, Slack plain_text
    HTML = "html"  # autoescaped
    MRKDWN = "mrkdwn"  # every expression's output escaped for Slack
    CHAT = "chat"  # plain text for chat services: every expression's mentions defused


@dataclass(frozen=True)
class TemplateSpec:
    """One template a channel type renders: its default file and how output is escaped."""

    default: str
    mode: Mode = Mode.TEXT


class TemplateOverride(BaseModel):
    """A template from config: inline text, or `{file: path}` read when the config loads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    file: str | None = None

    @property
    def origin(self) -> str:
        return f"file {self.file}" if self.file else "inline"


def load_override(value: Any, config_dir: Path | None) -> Any:
    """Config input -> TemplateOverride fields: a string is inline; `{file: p}` is read now,
    relative to the config file's directory, so a missing file fails at load, not at send."""
    if isinstance(value, str):
        return {"source": value}
    if isinstance(value, Mapping) and set(value) == {"file"} and isinstance(value["file"], str):
        path = Path(value["file"])
        if not path.is_absolute() and config_dir is not None:
            path = config_dir / path
        try:
            return {"source": path.read_text(encoding="utf-8"), "file": value["file"]}
        except OSError as exc:
            raise ValueError(f"cannot read template file {value['file']}: {exc.strerror}") from None
    return value


@functools.cache
def environment(mode: Mode) -> jinja2.Environment:
    """One sandboxed environment per mode; cached, so compiled defaults are kept."""
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=mode is Mode.HTML,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_FINALIZE.get(mode),
    )
    env.filters["one_line"] = single_line
    return env


def _escape_output(value: object) -> str:
    return escape_mrkdwn("" if value is None else str(value))


def _defused_output(value: object) -> str:
    return defuse_mentions("" if value is None else str(value))


_FINALIZE = {Mode.MRKDWN: _escape_output, Mode.CHAT: _defused_output}


def _template_line(exc: BaseException, filename: str) -> int | None:
    """The template line an error happened on: Jinja rewrites tracebacks so that template
    code shows as frames whose file is the template's filename."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return exc.lineno
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == filename:
            line = frame.lineno
    return line


def _problem(name: str, origin: str, exc: Exception, filename: str) -> TemplateError:
    line = _template_line(exc, filename)
    where = f"template {name!r} ({origin})" + (f", line {line}" if line else "")
    detail = exc.message if isinstance(exc, jinja2.TemplateError) and exc.message else str(exc)
    return TemplateError(f"{where}: {detail}", template=name, line=line)


@functools.lru_cache(maxsize=256)
def _compile(name: str, source: str, mode: Mode, origin: str) -> jinja2.Template:
    env = environment(mode)
    filename = f"<template {name}>"
    try:
        code = env.compile(source, name=name, filename=filename)
    except jinja2.TemplateSyntaxError as exc:
        raise _problem(name, origin, exc, filename) from None
    return _template(env, code)


@functools.lru_cache(maxsize=64)
def _default(mode: Mode, name: str) -> jinja2.Template:
    """A packaged default template, compiled once (they do not change while running)."""
    env = environment(mode)
    assert env.loader is not None
    source, filename, _ = env.loader.get_source(env, name)
    return _template(env, env.compile(source, name=name, filename=filename))


def _template(env: jinja2.Environment, code: CodeType) -> jinja2.Template:
    """Globals as a plain dict: Jinja's own (a ChainMap over the environment's) is walked
    twice per render (see docs/performance.md)."""
    return env.template_class.from_code(env, code, dict(env.globals))


def compile_override(name: str, override: TemplateOverride, spec: TemplateSpec) -> None:
    """Raise TemplateError (name, line, why) when an override does not compile."""
    _compile(name, override.source, spec.mode, override.origin)


def _resolve(
    name: str, specs: Mapping[str, TemplateSpec], overrides: Mapping[str, TemplateOverride]
) -> tuple[jinja2.Template, str, str]:
    spec = specs[name]
    override = overrides.get(name)
    if override is not None:
        template = _compile(name, override.source, spec.mode, override.origin)
        return template, override.origin, f"<template {name}>"
    template = _default(spec.mode, spec.default)
    return template, f"default {spec.default}", template.filename or spec.default


def render(
    name: str,
    message: Message,
    specs: Mapping[str, TemplateSpec],
    overrides: Mapping[str, TemplateOverride] | None = None,
) -> str:
    """Render template `name` for one message: the config's override, else the default.

    Raises TemplateError naming the template, where it came from and the line.
    """
    template, origin, filename = _resolve(name, specs, overrides or {})
    try:
        return template.render({**template_context(message), "claim_url": message.claim_url})
    except Exception as exc:  # any error inside a template is the template's problem
        raise _problem(name, origin, exc, filename) from None


def check_templates(
    specs: Mapping[str, TemplateSpec],
    overrides: Mapping[str, TemplateOverride],
    messages: Mapping[str, Message],
) -> list[str]:
    """Render every template of a channel against each sample message; one line per problem,
    naming the template, the line and the sample that broke it."""
    problems = []
    for name in specs:
        for sample, message in messages.items():
            try:
                render(name, message, specs, overrides)
            except TemplateError as exc:
                problems.append(f"{exc} [with the {sample} sample request]")
                break
    return problems
