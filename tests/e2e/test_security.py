"""Security end to end, on `deskbell serve` subprocesses: the bind rule, a 100 MB body refused
without the process growing by it, and a full authenticated run (env keys, a key from
`deskbell apikey create`, revocation, a signed webhook, Slack injection) whose captured logs
are then searched for every secret it was given."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from deskbell.api.webhooks import sign
from tests.fakes import wait_until
from tests.fakes.slack import FakeSlack
from tests.fakes.smtp import FakeSMTP
from tests.process import Deskbell, free_port, run_to_exit

INGEST_KEY = "ingest-key-" + "k" * 40
READ_KEY = "read-key-" + "r" * 40
WHSEC = "whsec_" + base64.b64encode(b"webhook-secret-bytes-0123456789").decode()
SMTP_PASSWORD = "smtp-pass-s3cret"
WRONG_SMTP_PASSWORD = "wrong-pass-9x7"
ATTACK = "<!channel> @here <http://evil.example|click> *bold*"


def serve(tmp_path: Path, *args: str, **env: str) -> tuple[Deskbell, dict[str, str]]:
    port = free_port()
    environment = {
        "DESKBELL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'sec.db'}",
        "DESKBELL_PORT": str(port),
        "DESKBELL_LOG_FORMAT": "json",
        **env,
    }
    running = Deskbell(["serve", *args], env=environment, workdir=tmp_path, port=port)
    return running.wait_ready(), environment


def test_refuses_a_public_host_without_credentials(tmp_path: Path) -> None:
    env = {
        "DESKBELL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bind.db'}",
        "DESKBELL_PORT": str(free_port()),
    }
    code, output = run_to_exit(["serve", "--host", "0.0.0.0"], env=env, workdir=tmp_path)
    assert code == 2
    assert "refusing to listen on 0.0.0.0 with authentication off" in output
    assert "--insecure" in output


def test_insecure_allows_it_and_loopback_logs_auth_off(tmp_path: Path) -> None:
    running, _ = serve(tmp_path, "--host", "0.0.0.0", "--insecure")
    output = running.stop()
    assert '"event":"auth_off_insecure"' in output
    running, _ = serve(tmp_path)
    assert running.client.get("/v1/topics").status_code == 200  # open on loopback
    output = running.stop()
    assert '"event":"auth_off"' in output
    assert "authentication is OFF; listening on 127.0.0.1 only" in output


def status_value(pid: int, field: str) -> int:
    """A /proc/PID/status memory figure, in KiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    assert match, field
    return int(match.group(1))


def post_streamed(port: int, total: int, chunked: bool) -> bytes:
    """POST `total` bytes, 1 MiB at a time, stopping as soon as the server answers."""
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    head = (
        f"POST /v1/assistance-requests HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\n{framing}\r\n\r\n"
    ).encode()
    piece = b"x" * (1 << 20)
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        sent = 0
        try:
            while sent < total:
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    answer += sock.recv(65536)
                sock.setblocking(True)
                if answer:
                    break
                data = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
                sock.sendall(data)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending
        sock.settimeout(10)
        while not _complete(answer):  # headers and body may come in separate packets
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    return answer


def _complete(answer: bytes) -> bool:
    head, found, body = answer.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_100_mb_body_is_refused_without_being_held(tmp_path: Path, chunked: bool) -> None:
    running, _ = serve(tmp_path)
    try:
        pid = running.process.pid
        before = status_value(pid, "VmHWM")
        answer = post_streamed(int(running.url.rsplit(":", 1)[1]), 100 << 20, chunked)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"body_too_large" in answer
        grown_mib = (status_value(pid, "VmHWM") - before) / 1024
        assert grown_mib < 20, f"peak RSS grew by {grown_mib:.0f} MiB for a 100 MiB body"
        assert running.client.get("/healthz").status_code == 200
    finally:
        running.stop()


CONFIG = """
channels:
  sales-slack:
    type: slack
    webhook_url: ${{SLACK_URL}}
  pricing-email:
    type: email
    smtp_url: {smtp}
    from: deskbell@example.com
    to: [pricing@example.com]
  broken-email:
    type: email
    smtp_url: {broken}
    from: deskbell@example.com
    to: [pricing@example.com]
    retry: {{max_attempts: 1}}
routes:
  - match: {{topic: sales}}
    to: [sales-slack]
  - match: {{topic: pricing}}
    to: [pricing-email, broken-email]
"""


@pytest.fixture
def peers() -> Iterator[tuple[FakeSlack, FakeSMTP]]:
    with FakeSlack() as slack, FakeSMTP(credentials=("deskbell", SMTP_PASSWORD)) as smtp:
        yield slack, smtp


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deskbell", *args],
        capture_output=True, text=True, timeout=60, check=False, cwd=cwd,
        env={**{k: v for k, v in os.environ.items()
                if not k.startswith("DESKBELL_")}, **env},
    )  # fmt: skip


def test_authenticated_run_leaks_no_secret(
    tmp_path: Path, peers: tuple[FakeSlack, FakeSMTP]
) -> None:
    slack, smtp = peers
    broken = smtp.url.replace(SMTP_PASSWORD, WRONG_SMTP_PASSWORD)
    config = tmp_path / "deskbell.yaml"
    config.write_text(CONFIG.format(smtp=smtp.url, broken=broken))
    running, env = serve(
        tmp_path,
        "--host",
        "0.0.0.0",  # allowed: credentials are configured
        DESKBELL_CONFIG=str(config),
        DESKBELL_API_KEYS=f"{INGEST_KEY}:ingest,{READ_KEY}:read",
        DESKBELL_WEBHOOK_SECRETS=WHSEC,
        SLACK_URL=slack.url,
    )
    ingest = {"Authorization": f"Bearer {INGEST_KEY}"}
    read = {"Authorization": f"Bearer {READ_KEY}"}
    url = "/v1/assistance-requests"
    try:
        assert (
            running.client.post(url, json={"topic": "sales", "description": "x"}).status_code == 401
        )
        assert running.client.get("/v1/topics", headers=ingest).status_code == 403

        sales = running.client.post(
            url, json={"topic": "sales", "description": ATTACK}, headers=ingest
        )
        assert sales.status_code == 202, sales.text
        (payload,) = slack.wait_for_payloads(1, timeout=10)
        raw = json.dumps(payload)
        for bad in ("<!channel>", "<http://evil.example", "<!here>"):
            assert bad not in raw
        assert not re.search(r"@(here|channel)\b", raw)
        assert "&lt;http://evil.example|click&gt;" in raw  # shown as text, not a link

        created = cli(env, tmp_path, "apikey", "create", "--scope", "admin", "--name", "ops")
        assert created.returncode == 0, created.stderr
        admin_key = created.stdout.strip()
        assert "shown only this once" in created.stderr
        admin = {"Authorization": f"Bearer {admin_key}"}
        shown = running.client.get("/v1/config", headers=admin)
        assert shown.status_code == 200

        body = orjson.dumps({"topic": "pricing", "description": "signed"})
        ts = int(time.time())
        signed = {
            "content-type": "application/json",
            "webhook-id": "msg_e2e",
            "webhook-timestamp": str(ts),
            "webhook-signature": sign(WHSEC, "msg_e2e", ts, body),
        }
        pricing = running.client.post(url, content=body, headers=signed)
        assert pricing.status_code == 202, pricing.text
        assert (
            running.client.post(url, content=body, headers=signed).json()["id"]
            == pricing.json()["id"]
        )
        smtp.wait_for_messages(1, timeout=10)

        def broken_is_dead() -> bool:
            shown = running.client.get(pricing.headers["location"], headers=read).json()
            return any(d["status"] == "dead" for d in shown["deliveries"])

        wait_until(broken_is_dead, timeout=15, what="the wrong-password channel to go dead")

        listed = cli(env, tmp_path, "apikey", "list")
        assert "ops" in listed.stdout
        assert "admin" in listed.stdout
        assert admin_key not in listed.stdout
        revoked = cli(env, tmp_path, "apikey", "revoke", "ops")
        assert revoked.returncode == 0, revoked.stderr
        assert running.client.get("/v1/config", headers=admin).status_code == 401
    finally:
        output = running.stop()
    secrets = [INGEST_KEY, READ_KEY, admin_key, WHSEC, WHSEC[6:], slack.url, SMTP_PASSWORD,
               WRONG_SMTP_PASSWORD]  # fmt: skip
    for where, text in (("logs", output), ("GET /v1/config", shown.text)):
        for secret in secrets:
            assert secret not in text, f"a secret appears in the {where}"
    assert '"event":"auth_on"' in output
