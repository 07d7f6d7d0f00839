"""Webhook signatures: PagerDuty V3 (``X-PagerDuty-Signature``) and Slack (``X-Slack-Signature``).

Pure functions over the raw request body, before any parsing. A failure raises `SignatureError`
carrying the HTTP status to answer: 400 for a missing or malformed header, 401 for a stale timestamp
or a bad Slack signature (or no Slack secret), 403 when no PagerDuty signature matches.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

SLACK_MAX_AGE_S = 300  # Slack's replay window: five minutes either side of now

_PD_V1 = re.compile(r"v1=([0-9a-fA-F]{64})")
# ASCII digits only: int() would also take " 12", "+12" and "1_2", which no Slack header carries
_SLACK_TS = re.compile(r"[0-9]{1,15}")


class SignatureError(ValueError):
    """A request that failed verification; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _hmac_sha256(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()


# -- PagerDuty ---------------------------------------------------------------------------------------
def sign_pagerduty(body: bytes, secret: str) -> str:
    """The ``v1=<hex>`` entry PagerDuty sends for ``body`` under ``secret``."""
    return "v1=" + _hmac_sha256(secret, body).hex()


def verify_pagerduty(body: bytes, header: str | None, secrets: Sequence[str]) -> None:
    """Accept when any ``v1`` signature in ``header`` matches ``body`` under any of ``secrets``."""
    keys = [s for s in secrets if s]
    if not keys:
        raise SignatureError(403, "no PagerDuty webhook secret configured")
    if not header or not header.strip():
        raise SignatureError(400, "missing X-PagerDuty-Signature header")
    given: list[bytes] = []
    for entry in header.split(","):
        match = _PD_V1.fullmatch(entry.strip())
        if match:  # other versions (v0=, v2=, ...) are ignored, as PagerDuty asks
            given.append(bytes.fromhex(match.group(1)))
    if not given:
        raise SignatureError(400, "no well-formed v1 signature in X-PagerDuty-Signature")
    expected = [_hmac_sha256(key, body) for key in keys]
    matched = False
    # every pair is compared, so the time taken does not tell which secret or entry matched
    for sig in given:
        for digest in expected:
            matched |= hmac.compare_digest(sig, digest)
    if not matched:
        raise SignatureError(403, "no PagerDuty signature matches")


# -- Slack -------------------------------------------------------------------------------------------
def _slack_digest(body: bytes, secret: str, timestamp: str) -> str:
    # the basestring is "v0:<timestamp as sent>:<raw body>"; bytes throughout, so a body that is not
    # UTF-8 is still verified rather than failing to decode
    return "v0=" + _hmac_sha256(secret, b"v0:" + timestamp.encode("ascii") + b":" + body).hex()


def sign_slack(body: bytes, secret: str, timestamp: int) -> str:
    """The ``X-Slack-Signature`` value Slack sends for ``body`` at ``timestamp``."""
    return _slack_digest(body, secret, str(timestamp))


def verify_slack(body: bytes, timestamp: str | None, signature: str | None, secret: str, now: float) -> None:
    """Accept a fresh (within five minutes of ``now``) request whose ``v0`` signature matches."""
    if not secret or not secret.strip():
        raise SignatureError(401, "no Slack signing secret configured")
    if timestamp is None or signature is None:
        raise SignatureError(400, "missing X-Slack-Request-Timestamp or X-Slack-Signature header")
    if not _SLACK_TS.fullmatch(timestamp):
        raise SignatureError(400, "X-Slack-Request-Timestamp is not an integer")
    if abs(now - int(timestamp)) > SLACK_MAX_AGE_S:
        raise SignatureError(401, "stale X-Slack-Request-Timestamp")
    expected = _slack_digest(body, secret, timestamp)
    # bytes, because compare_digest refuses str with non-ASCII characters (a hostile header may have them)
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace")):
        raise SignatureError(401, "Slack signature does not match")
