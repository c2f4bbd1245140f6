"""A real local SMTP server (aiosmtpd) that keeps what it receives, for email tests.

aiosmtpd's `Controller` runs the server in its own thread and event loop on 127.0.0.1 and a
free port, so the test's loop, a worker in it, or a separate deskbell process can all send to it.

    with FakeSMTP() as smtp:
        settings = {"type": "email", "smtp_url": smtp.url, "from": "bot@example.com",
                    "to": ["sales@example.com"]}
        ...                                  # send something
        mail = (await smtp.wait_for_messages_async(1))[0]
        assert mail.message["Subject"].startswith("[deskbell]")

API
- `FakeSMTP(host="127.0.0.1", credentials=None, *, smtputf8=False)`; context manager, or
  `start()` / `stop()`. `smtputf8=True` offers SMTPUTF8 (non-ASCII addresses).
  With `credentials=("user", "secret")` the server offers AUTH PLAIN/LOGIN without TLS and
  accepts only that pair (a wrong pair is answered `535`); without it, AUTH is not offered.
- `host`, `port`, `url` (`smtp://host:port`, or `smtp://user:secret@host:port` with
  credentials). The server never offers STARTTLS.
- Failure modes (thread-safe setters): `reject_recipient(address, code=550)` refuses one
  address at RCPT; `reject_all_recipients(code=550)` refuses every address (`code=None` turns
  it off); `reply_to_data(reply)` answers DATA with a full reply line such as
  `"554 5.6.0 Message rejected"` or `"451 4.3.0 Try later"` (None: accept).
- Records, thread-safe, as copies: `messages` (each a `ReceivedMail` with `mail_from`,
  `rcpt_tos`, `message` parsed with `email.policy.default` so it is an `EmailMessage`, with
  LF line ends, and `raw`, the bytes as received), `logins` (user names that authenticated);
  `clear()` empties both.
- Waiting: `wait_for_messages(n, timeout=5.0)` / `await wait_for_messages_async(n, timeout)`
  return the messages once at least `n` arrived, else raise AssertionError.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from types import TracebackType
from typing import Any, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.fakes import DEFAULT_TIMEOUT, wait_until, wait_until_async


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes


class _Handler:
    """aiosmtpd handler hooks; state lives on the FakeSMTP, read under its lock."""

    def __init__(self, fake: FakeSMTP) -> None:
        self.fake = fake

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        code = self.fake._rejection_for(address)
        if code is not None:
            kind = "4.2.0 Mailbox busy" if code < 500 else "5.1.1 Mailbox unavailable"
            return f"{code} {kind}: {address}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = self.fake._data_reply()
        if reply is not None:
            return reply
        raw = bytes(envelope.original_content or envelope.content)
        # Parsed with LF line ends, so tests compare decoded text without caring about CRLF.
        parsed = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
        self.fake._record(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), parsed, raw))
        return "250 Message accepted for delivery"


class _Controller(Controller):
    """Binds port 0 and learns the real port before aiosmtpd's self-check connects to it."""

    def _trigger_server(self) -> None:
        server = cast("asyncio.Server", self.server)
        self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]  # aiosmtpd is untyped


class FakeSMTP:
    def __init__(
        self,
        host: str = "127.0.0.1",
        credentials: tuple[str, str] | None = None,
        *,
        smtputf8: bool = False,  # offer SMTPUTF8 (RFC 6531) in the EHLO answer
    ) -> None:
        self.host = host
        self.smtputf8 = smtputf8
        self.port = 0
        self.credentials = credentials
        self._lock = threading.Lock()
        self._rejected: dict[str, int] = {}
        self._reject_all: int | None = None
        self._data: str | None = None
        self._messages: list[ReceivedMail] = []
        self._logins: list[str] = []
        self._controller: _Controller | None = None

    def start(self) -> FakeSMTP:
        kwargs: dict[str, Any] = {}
        if self.credentials is not None:
            kwargs = {"authenticator": self._authenticate, "auth_require_tls": False}
        kwargs["enable_SMTPUTF8"] = self.smtputf8
        self._controller = _Controller(_Handler(self), hostname=self.host, port=0, **kwargs)
        self._controller.start()
        self.port = int(self._controller.port)
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> FakeSMTP:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        auth = f"{self.credentials[0]}:{self.credentials[1]}@" if self.credentials else ""
        return f"smtp://{auth}{self.host}:{self.port}"

    def reject_recipient(self, address: str, code: int = 550) -> None:
        with self._lock:
            self._rejected[address.lower()] = code

    def reject_all_recipients(self, code: int | None = 550) -> None:
        with self._lock:
            self._reject_all = code

    def reply_to_data(self, reply: str | None) -> None:
        with self._lock:
            self._data = reply

    @property
    def messages(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._messages)

    @property
    def logins(self) -> list[str]:
        with self._lock:
            return list(self._logins)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
            self._logins.clear()

    def wait_for_messages(
        self, count: int = 1, timeout: float = DEFAULT_TIMEOUT
    ) -> list[ReceivedMail]:
        wait_until(lambda: len(self.messages) >= count, timeout, f"{count} email(s)")
        return self.messages

    async def wait_for_messages_async(
        self, count: int = 1, timeout: float = DEFAULT_TIMEOUT
    ) -> list[ReceivedMail]:
        await wait_until_async(lambda: len(self.messages) >= count, timeout, f"{count} email(s)")
        return self.messages

    def _rejection_for(self, address: str) -> int | None:
        with self._lock:
            return self._rejected.get(address.lower(), self._reject_all)

    def _data_reply(self) -> str | None:
        with self._lock:
            return self._data

    def _record(self, mail: ReceivedMail) -> None:
        with self._lock:
            self._messages.append(mail)

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if self.credentials is None or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode(errors="replace")
        password = auth_data.password.decode(errors="replace")
        if (login, password) != self.credentials:
            return AuthResult(success=False, handled=False)
        with self._lock:
            self._logins.append(login)
        return AuthResult(success=True)
