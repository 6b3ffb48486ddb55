"""Impression tokens: signed, tamper-evident, expiring (pure functions)."""

from __future__ import annotations

import pytest

from gateway.token import ImpressionToken, TokenError, TokenSigner

TOKEN = ImpressionToken(
    "d1", "u1", "v1", "p1", "home_row", "thompson", "ts", 7, 0.25, 1_000_000, 3, ""
)


def test_round_trip_and_compactness():
    signer = TokenSigner(b"k")
    text = signer.sign(TOKEN)
    assert signer.verify(text, now_ms=1_000_500, ttl_ms=1000) == TOKEN
    assert len(text) < 200 and "=" not in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no-dot", "payload.mac"),
        ("YWJj.YWJj", "signature"),
        ("!!!.???", "base64"),
    ],
)
def test_malformed_tokens_are_refused(text, message):
    with pytest.raises(TokenError, match=message):
        TokenSigner(b"k").verify(text, now_ms=0, ttl_ms=1000)


def test_another_secret_or_a_changed_payload_is_refused():
    text = TokenSigner(b"k").sign(TOKEN)
    with pytest.raises(TokenError, match="signature"):
        TokenSigner(b"other").verify(text, now_ms=1_000_000, ttl_ms=1000)
    payload, mac = text.split(".")
    tampered = TokenSigner(b"k").sign(TOKEN._replace(propensity=0.99)).split(".")[0]
    with pytest.raises(TokenError, match="signature"):
        TokenSigner(b"k").verify(f"{tampered}.{mac}", now_ms=1_000_000, ttl_ms=1000)


def test_expired_and_future_tokens_are_refused():
    signer = TokenSigner(b"k")
    text = signer.sign(TOKEN)
    with pytest.raises(TokenError, match="expired"):
        signer.verify(text, now_ms=1_000_000 + 1001, ttl_ms=1000)
    with pytest.raises(TokenError, match="expired"):
        signer.verify(text, now_ms=1_000_000 - 120_000, ttl_ms=1000)
    with pytest.raises(ValueError, match="empty"):
        TokenSigner(b"")
