"""Impression tokens: signed, tamper-evident, expiring (pure functions)."""

from __future__ import annotations

import hashlib
import hmac

import orjson
import pytest

from gateway.token import MAC_BYTES, ImpressionToken, TokenError, TokenSigner, _b64

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


@pytest.mark.parametrize("user_id", ["u", "uu", "uuu"])  # every padding length
def test_a_token_is_each_part_in_base64url_without_padding(user_id):
    token = TOKEN._replace(user_id=user_id)
    payload = orjson.dumps([1, *token])
    text = TokenSigner(b"k").sign(token)
    assert text == _signed(payload)
    assert "=" not in text and "+" not in text and "/" not in text


def _signed(payload: bytes, secret: bytes = b"k") -> str:
    """A token whose mac is right for any payload bytes, well formed or not."""
    mac = hmac.new(secret, payload, hashlib.sha256).digest()[:MAC_BYTES]
    return f"{_b64(payload)}.{_b64(mac)}"


def _fields(**changes: object) -> list[object]:
    fields = [1, *TOKEN]
    for name, value in changes.items():
        fields[1 + ImpressionToken._fields.index(name)] = value
    return fields


@pytest.mark.parametrize(
    "payload",
    [
        orjson.dumps(dict(zip(ImpressionToken._fields, TOKEN, strict=True))),
        orjson.dumps({"0": 1}),
        orjson.dumps([]),
        orjson.dumps("text"),
        orjson.dumps(_fields(issued_ms="x")),
        orjson.dumps(_fields(propensity="x")),
        orjson.dumps(_fields(propensity=None)),
        orjson.dumps(_fields(propensity=True)),
        orjson.dumps(_fields(model_version="x")),
        orjson.dumps(_fields(model_version=1.5)),
        orjson.dumps(_fields(experiment_version=None)),
        orjson.dumps(_fields(poster_id=7)),
        orjson.dumps(_fields(segment=["a"])),
        orjson.dumps([1, *TOKEN][:-1]),
        orjson.dumps([1, *TOKEN, "extra"]),
        b"\xff\xfe",
    ],
)
def test_signed_payloads_of_the_wrong_shape_are_malformed(payload):
    with pytest.raises(TokenError, match="token payload is malformed"):
        TokenSigner(b"k").verify(_signed(payload), now_ms=1_000_000, ttl_ms=1000)


@pytest.mark.parametrize("propensity", [0, 0.0, -0.25, 1.0000001, 2])
def test_signed_propensities_outside_zero_one_are_refused(propensity):
    text = _signed(orjson.dumps(_fields(propensity=propensity)))
    with pytest.raises(TokenError, match=r"propensity .* is not in \(0, 1\]"):
        TokenSigner(b"k").verify(text, now_ms=1_000_000, ttl_ms=1000)


def test_an_integer_propensity_of_one_is_a_float():
    text = _signed(orjson.dumps(_fields(propensity=1)))
    token = TokenSigner(b"k").verify(text, now_ms=1_000_000, ttl_ms=1000)
    assert token.propensity == 1.0 and isinstance(token.propensity, float)
