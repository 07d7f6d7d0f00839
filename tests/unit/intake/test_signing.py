"""Webhook signatures against the official PagerDuty and Slack vectors, plus a property test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supply_agent.intake.signing import (
    SignatureError,
    sign_pagerduty,
    sign_slack,
    verify_pagerduty,
    verify_slack,
)

VECTOR = Path(__file__).resolve().parents[2] / "vectors" / "pd_gopagerduty_priority_updated.json"
PD_SECRET = "lDQHScfUeXUKaQRNF+8XIiDKZ7XX3itBAYzwU0TARw8lJqRnkKl2iB1anSb0Z+IK"
PD_GOOD = "v1=0c0b9495b893a39e70d1fea2fe11fbe0a825f88b9f67846f6cc07dd2bc5476cd"
PD_BAD = "v1=7020c8a7ec668a9b7012bc3dd82e483394b038f4230acc6785efbf2a7d8bcaf5"

SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_TS = 1531420618
SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
SLACK_SIG = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


@pytest.fixture(scope="module")
def pd_body() -> bytes:
    body = VECTOR.read_bytes()
    assert len(body) == 1655  # byte-for-byte the go-pagerduty vector
    return body


def status_of(call: Callable[..., None], *args: Any) -> int:
    with pytest.raises(SignatureError) as err:
        call(*args)
    return err.value.status


# -- PagerDuty ---------------------------------------------------------------------------------------
def test_pagerduty_official_vector(pd_body: bytes) -> None:
    assert sign_pagerduty(pd_body, PD_SECRET) == PD_GOOD
    verify_pagerduty(pd_body, PD_GOOD, [PD_SECRET])


def test_pagerduty_negative_vector_is_403(pd_body: bytes) -> None:
    assert status_of(verify_pagerduty, pd_body, PD_BAD, [PD_SECRET]) == 403


def test_pagerduty_rotation_two_signatures_one_matching(pd_body: bytes) -> None:
    verify_pagerduty(pd_body, f"{PD_BAD},{PD_GOOD}", [PD_SECRET])
    verify_pagerduty(pd_body, f"{PD_GOOD}, {PD_BAD}", [PD_SECRET])


def test_pagerduty_rotation_two_secrets_second_matching(pd_body: bytes) -> None:
    verify_pagerduty(pd_body, PD_GOOD, ["an-old-secret", PD_SECRET])
    assert status_of(verify_pagerduty, pd_body, PD_GOOD, ["an-old-secret", "another"]) == 403


def test_pagerduty_uppercase_hex_is_well_formed(pd_body: bytes) -> None:
    verify_pagerduty(pd_body, "v1=" + PD_GOOD[3:].upper(), [PD_SECRET])


def test_pagerduty_other_versions_ignored(pd_body: bytes) -> None:
    verify_pagerduty(pd_body, f"v0={PD_BAD[3:]},{PD_GOOD}", [PD_SECRET])
    assert status_of(verify_pagerduty, pd_body, f"v2={PD_GOOD[3:]}", [PD_SECRET]) == 400


def test_pagerduty_flipped_body_byte_is_403(pd_body: bytes) -> None:
    body = bytearray(pd_body)
    body[100] ^= 0x01
    assert status_of(verify_pagerduty, bytes(body), PD_GOOD, [PD_SECRET]) == 403


@pytest.mark.parametrize("header", [None, "", "   ", "v1=", "v1=abc", "v1=" + "g" * 64, "sha256=" + "a" * 64])
def test_pagerduty_missing_or_malformed_header_is_400(pd_body: bytes, header: str | None) -> None:
    assert status_of(verify_pagerduty, pd_body, header, [PD_SECRET]) == 400


def test_pagerduty_no_secret_configured_is_403(pd_body: bytes) -> None:
    for secrets in ([], [""]):
        with pytest.raises(SignatureError) as err:
            verify_pagerduty(pd_body, PD_GOOD, secrets)
        assert err.value.status == 403
        assert str(err.value) == "no PagerDuty webhook secret configured"


# -- Slack -------------------------------------------------------------------------------------------
def test_slack_official_vector() -> None:
    assert sign_slack(SLACK_BODY, SLACK_SECRET, SLACK_TS) == SLACK_SIG
    verify_slack(SLACK_BODY, str(SLACK_TS), SLACK_SIG, SLACK_SECRET, now=SLACK_TS)


def test_slack_agrees_with_slack_sdk() -> None:
    from slack_sdk.signature import Clock, SignatureVerifier

    class At(Clock):
        def now(self) -> float:
            return SLACK_TS + 10

    verifier = SignatureVerifier(SLACK_SECRET, clock=At())
    assert verifier.generate_signature(timestamp=str(SLACK_TS), body=SLACK_BODY) == SLACK_SIG
    assert verifier.is_valid(SLACK_BODY, str(SLACK_TS), sign_slack(SLACK_BODY, SLACK_SECRET, SLACK_TS))


@pytest.mark.parametrize(
    ("offset", "ok"), [(0, True), (299, True), (300, True), (-299, True), (301, False), (-301, False)]
)
def test_slack_replay_window(offset: int, ok: bool) -> None:
    args = (SLACK_BODY, str(SLACK_TS), SLACK_SIG, SLACK_SECRET, SLACK_TS + offset)
    if ok:
        verify_slack(*args)
    else:
        with pytest.raises(SignatureError, match="stale") as err:
            verify_slack(*args)
        assert err.value.status == 401


def test_slack_wrong_secret_is_401() -> None:
    assert status_of(verify_slack, SLACK_BODY, str(SLACK_TS), SLACK_SIG, "another-secret", SLACK_TS) == 401


def test_slack_tampered_body_or_signature_is_401() -> None:
    assert (
        status_of(verify_slack, SLACK_BODY + b"&x=1", str(SLACK_TS), SLACK_SIG, SLACK_SECRET, SLACK_TS) == 401
    )
    assert (
        status_of(verify_slack, SLACK_BODY, str(SLACK_TS), SLACK_SIG.upper(), SLACK_SECRET, SLACK_TS) == 401
    )
    assert status_of(verify_slack, SLACK_BODY, str(SLACK_TS), "v0=ünïcode", SLACK_SECRET, SLACK_TS) == 401


@pytest.mark.parametrize(("timestamp", "signature"), [(None, SLACK_SIG), (str(SLACK_TS), None), (None, None)])
def test_slack_missing_headers_are_400(timestamp: str | None, signature: str | None) -> None:
    assert status_of(verify_slack, SLACK_BODY, timestamp, signature, SLACK_SECRET, SLACK_TS) == 400


@pytest.mark.parametrize(
    "timestamp", ["", "abc", "1531420618.5", " 1531420618", "+1531420618", "1_531_420_618"]
)
def test_slack_non_integer_timestamp_is_400(timestamp: str) -> None:
    assert status_of(verify_slack, SLACK_BODY, timestamp, SLACK_SIG, SLACK_SECRET, SLACK_TS) == 400


@pytest.mark.parametrize("secret", ["", "   "])
def test_slack_no_secret_configured_is_401(secret: str) -> None:
    with pytest.raises(SignatureError, match="no Slack signing secret configured") as err:
        verify_slack(SLACK_BODY, str(SLACK_TS), SLACK_SIG, secret, SLACK_TS)
    assert err.value.status == 401


def test_signature_error_is_a_value_error() -> None:
    err = SignatureError(400, "why")
    assert isinstance(err, ValueError)
    assert (err.status, err.reason, str(err)) == (400, "why", "why")


# -- properties --------------------------------------------------------------------------------------
secrets = st.text(min_size=1, max_size=64).filter(lambda s: s.strip() != "")


@given(
    body=st.binary(min_size=1, max_size=512),
    secret=secrets,
    index=st.integers(min_value=0),
    delta=st.integers(1, 255),
)
def test_pagerduty_sign_then_verify(body: bytes, secret: str, index: int, delta: int) -> None:
    header = sign_pagerduty(body, secret)
    verify_pagerduty(body, header, [secret])
    changed = bytearray(body)
    changed[index % len(body)] = (changed[index % len(body)] + delta) % 256
    with pytest.raises(SignatureError) as err:
        verify_pagerduty(bytes(changed), header, [secret])
    assert err.value.status == 403


@given(
    body=st.binary(min_size=1, max_size=512),
    secret=secrets,
    ts=st.integers(min_value=0, max_value=4_000_000_000),
    index=st.integers(min_value=0),
    delta=st.integers(1, 255),
)
def test_slack_sign_then_verify(body: bytes, secret: str, ts: int, index: int, delta: int) -> None:
    signature = sign_slack(body, secret, ts)
    verify_slack(body, str(ts), signature, secret, now=ts)
    changed = bytearray(body)
    changed[index % len(body)] = (changed[index % len(body)] + delta) % 256
    with pytest.raises(SignatureError) as err:
        verify_slack(bytes(changed), str(ts), signature, secret, now=ts)
    assert err.value.status == 401
