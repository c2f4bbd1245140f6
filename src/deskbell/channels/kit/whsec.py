"""Standard Webhooks secrets, one rule wherever deskbell takes one: the webhook channel's
`secret:` (deskbell signs) and its senders' secrets (DESKBELL_WEBHOOK_SECRETS and `sources:`
in config; deskbell verifies).

The rule is the specification's: `whsec_`, then the base64 of a key of 24 to 64 bytes. The
padding may be left off, as the `standardwebhooks` reference library also accepts.
"""

from __future__ import annotations

import base64
import binascii

PREFIX = "whsec_"
RULE = "whsec_ followed by 24 to 64 bytes in base64"
MIN_BYTES = 24
MAX_BYTES = 64


def is_webhook_secret(value: str) -> bool:
    """True when `value` is a Standard Webhooks secret (see the module docstring)."""
    if not value.startswith(PREFIX):
        return False
    encoded = value.removeprefix(PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return MIN_BYTES <= len(key) <= MAX_BYTES
