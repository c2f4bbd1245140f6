"""Templates: sandbox, escaping per mode, overrides inline and from files, errors with name and
line, and the sample-request check behind `deskbell config check`."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2.sandbox import SandboxedEnvironment
from pydantic import ValidationError

from deskbell.channels import build_registry
from deskbell.channels.kit.render import (
    Mode,
    TemplateOverride,
    TemplateSpec,
    check_templates,
    environment,
    render,
)
from deskbell.channels.kit.sample import check_channel_templates, sample_messages
from deskbell.config.load import parse_config
from deskbell.errors import ConfigError, TemplateError
from tests.fakes import make_message

TEXT = {"t": TemplateSpec("message.txt")}
NOW = make_message().accepted_at


def inline(source: str) -> dict[str, TemplateOverride]:
    return {"t": TemplateOverride(source=source)}


@pytest.mark.parametrize("mode", list(Mode))
def test_every_environment_is_sandboxed(mode: Mode) -> None:
    assert isinstance(environment(mode), SandboxedEnvironment)


def test_the_sandbox_keeps_templates_away_from_python_internals() -> None:
    with pytest.raises(TemplateError, match="unsafe"):
        render("t", make_message(), TEXT, inline("{{ ''.__class__.__mro__[1].__subclasses__() }}"))


def test_html_escapes_values_and_text_does_not() -> None:
    message = make_message({"topic": "sales", "description": "<b>&</b>"})
    html = {"t": TemplateSpec("email.html", Mode.HTML)}
    assert "&lt;b&gt;&amp;&lt;/b&gt;" in render("t", message, html)
    assert "<b>&</b>" in render("t", message, TEXT)


def test_mrkdwn_escapes_every_expression_but_not_literal_text() -> None:
    message = make_message({"topic": "sales", "description": "<!here>"})
    spec = {"t": TemplateSpec("slack_body.txt", Mode.MRKDWN)}
    assert render("t", message, spec, inline("<!subteam> {{ description }}")) == (
        "<!subteam> &lt;!here&gt;"
    )


def test_runtime_errors_name_the_template_and_line() -> None:
    with pytest.raises(TemplateError) as caught:
        render("t", make_message(), TEXT, inline("line one\n\n{{ customr.name }}"))
    assert str(caught.value) == "template 't' (inline), line 3: 'customr' is undefined"
    assert caught.value.line == 3


def test_context_offers_optional_facts_as_none() -> None:
    source = "{{ customer.name }}|{{ language }}|{{ conversation_url }}|{{ request.metadata }}"
    assert render("t", make_message(), TEXT, inline(source)) == "None|None|None|{}"


def test_file_overrides_are_read_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "console.txt").write_text("Topic: {{ topic }}\n{{ oops( }}\n")
    config = "channels:\n  c: {type: console, template: {text: {file: tpl/console.txt}}}\n"
    with pytest.raises(ConfigError, match=r"template 'text' \(file tpl/console.txt\), line 2"):
        parse_config(config, build_registry(), base_dir=tmp_path)


def test_a_good_file_override_is_used(tmp_path: Path) -> None:
    (tmp_path / "console.txt").write_text("Topic: {{ topic }}\n")
    config = "channels:\n  c: {type: console, template: {text: {file: console.txt}}}\n"
    settings = parse_config(config, build_registry(), base_dir=tmp_path).channels["c"]
    assert render("text", make_message(), settings.TEMPLATES, settings.template) == (
        "Topic: sales\n"
    )


def test_check_finds_a_template_that_only_breaks_without_optional_fields() -> None:
    problems = check_templates(
        TEXT, inline("{{ customer.name.upper() }}"), sample_messages("c", NOW)
    )
    assert len(problems) == 1
    assert "template 't' (inline), line 1" in problems[0]
    assert "[with the minimal sample request]" in problems[0]


def test_every_default_template_renders_for_every_builtin_type() -> None:
    registry = build_registry()
    minimal = {
        "slack": {"webhook_url": "https://hooks.slack.com/services/T/B/x"},
        "email": {"smtp_url": "smtp://localhost", "from": "a@example.com", "to": ["b@x.com"]},
        "webhook": {"url": "https://crm.example.com/hook"},
        "apprise": {"urls": "json://crm.example.com/hook"},
        "console": {},
    }
    channels = {
        name: registry[name].settings_model.model_validate({"type": name, **block})
        for name, block in minimal.items()
    }
    checked, problems = check_channel_templates(channels, NOW)
    assert problems == []
    assert checked == 3 + 3 + 0 + 2 + 1


def test_an_unknown_template_name_is_refused() -> None:
    with pytest.raises(ValidationError, match="webhook channels have: none"):
        build_registry()["webhook"].settings_model.model_validate(
            {"type": "webhook", "url": "https://x.example/h", "template": {"body": "x"}}
        )
