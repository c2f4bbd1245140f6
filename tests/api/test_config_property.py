"""Properties of the config API over many documents (hypothesis):

- any config `PUT /v1/config` accepts comes back from `GET /v1/config` as sent, secrets
  redacted (`${VAR}` as written, literals `**********`);
- `deskbell config check` (the CLI command itself) and `POST /v1/config/validate` agree, on
  generated documents and on the fixtures in tests/data.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from deskbell.cli import app as cli_app
from deskbell.config.secrets import MASK
from deskbell.settings import Settings
from deskbell.wiring import build_runtime
from tests.conftest import CONSOLE_CONFIG, running_app

DATA = Path(__file__).resolve().parents[1] / "data"
ENV = {
    "HOOK_URL": "https://hooks.example.com/from-env",
    "SLACK_URL": "https://hooks.slack.com/services/T/B/env",
    "SMTP_HOST": "mail.example.com",
}
LITERAL = "https://hooks.example.com/literal-s3cr3t"
NAMES = ["a", "b", "c"]


@pytest.fixture
async def client(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    start = tmp_path / "start.yaml"
    start.write_text(CONSOLE_CONFIG)
    runtime = build_runtime(
        Settings(database_url=sqlite_url, config=start, secret_key="k" * 40),
        with_workers=False,
        console=io.StringIO(),
    )
    async with running_app(runtime, start_workers=False) as test_client:
        yield test_client


channel = st.one_of(
    st.just({"type": "console"}),
    st.builds(lambda t: {"type": "console", "timeout": t}, st.sampled_from([1, 30, -1, "x"])),
    st.builds(
        lambda url: {"type": "webhook", "url": url},
        st.sampled_from([LITERAL, "${HOOK_URL}", "${MISSING_VAR}", "not a url"]),
    ),
    st.just({"type": "pigeon"}),
)
route = st.fixed_dictionaries(
    {
        "match": st.fixed_dictionaries(
            {"topic": st.sampled_from(["sales", "billing", ["a", "b"], "Not A Topic!"])}
        ),
        "to": st.lists(st.sampled_from([*NAMES, "ghost"]), min_size=0, max_size=2),
    },
    optional={"fallback": st.sampled_from([*NAMES, "ghost"])},
)
documents = st.fixed_dictionaries(
    {
        "channels": st.dictionaries(st.sampled_from(NAMES), channel, min_size=1, max_size=3),
        "routes": st.lists(route, max_size=3),
        "default": st.one_of(st.just("reject"), st.lists(st.sampled_from(NAMES), max_size=2)),
    }
)


def shown(document: dict[str, Any]) -> dict[str, Any]:
    """What GET must show of `document`: literal webhook URLs masked, the rest as sent."""
    out: dict[str, Any] = yaml.safe_load(yaml.safe_dump(document))
    for block in out["channels"].values():
        if block["type"] == "webhook" and not block["url"].startswith("${"):
            block["url"] = MASK
    return out


def config_check(path: Path) -> int:
    result = CliRunner().invoke(cli_app, ["config", "check", str(path)])
    return result.exit_code


async def validate(client: httpx.AsyncClient, text: str) -> int:
    answer = await client.post(
        "/v1/config/validate", content=text, headers={"content-type": "application/yaml"}
    )
    assert answer.status_code in (200, 422), answer.text
    return answer.status_code


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(document=documents)
async def test_accepted_documents_round_trip_and_check_agrees(
    client: httpx.AsyncClient, tmp_path: Path, document: dict[str, Any]
) -> None:
    text = yaml.safe_dump(document)
    path = tmp_path / "generated.yaml"
    path.write_text(text)
    valid = await validate(client, text) == 200
    assert (config_check(path) == 0) == valid, text

    put = await client.put("/v1/config", content=text, headers={"content-type": "application/yaml"})
    assert put.status_code in ((200, 201) if valid else (422,)), put.text
    got = (await client.get("/v1/config")).json()
    assert LITERAL not in str(got)
    if valid:
        assert got["version"] == put.json()["number"]
        assert got["document"] == shown(document)
        again = await client.put("/v1/config", json=got["document"])  # masked values kept
        assert again.status_code == 200, again.text
        assert again.json()["changed"] is False


CORPUS = [DATA / "good.yaml", *sorted((DATA / "bad").glob("*.yaml"))]


async def test_config_check_and_validate_agree_on_the_fixtures(client: httpx.AsyncClient) -> None:
    """One app for the whole corpus: every fixture is judged alike by both."""
    assert len(CORPUS) > 10
    for path in CORPUS:
        expected = 0 if path.name == "good.yaml" else 1
        assert config_check(path) == expected, path.name
        assert await validate(client, path.read_text()) == (200 if expected == 0 else 422), path
