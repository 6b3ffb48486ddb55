"""Signed impression tokens: what the gateway decided, carried by the client.

A token is ``base64url(payload) "." base64url(mac)`` without padding. The
payload is a JSON array (version 1)::

    [1, decision_id, user_id, video_id, poster_id, placement, policy,
     variant, model_version, propensity, issued_ms, experiment_version, segment]

and the mac is the first 16 bytes of HMAC-SHA256 over the payload bytes with
the ``token_secret`` setting. The collector verifies the mac in constant time
and fills the impression from the payload, so a client can report that it
showed a poster but cannot change which, for whom, or with what propensity.
Tokens are not encrypted: the payload is readable by the client (it holds
nothing the client did not send or receive anyway).

Examples
--------
>>> signer = TokenSigner(b"secret")
>>> t = ImpressionToken("d1", "u1", "v1", "p1", "home_row", "thompson", "ts",
...     3, 0.25, 1_700_000_000_000, 2, "")
>>> signer.verify(signer.sign(t), now_ms=1_700_000_000_000, ttl_ms=1000) == t
True
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from collections.abc import Callable
from typing import NamedTuple

import orjson

__all__ = ["ImpressionToken", "TokenError", "TokenSigner"]

VERSION = 1
MAC_BYTES = 16
MALFORMED = "token payload is malformed"


class TokenError(ValueError):
    """A token that is malformed, forged or expired; the message says which."""


class ImpressionToken(NamedTuple):
    """The decision facts an impression token carries."""

    decision_id: str
    user_id: str
    video_id: str
    poster_id: str
    placement: str
    policy: str
    variant: str
    model_version: int
    propensity: float
    issued_ms: int
    experiment_version: int
    segment: str


_URLSAFE = bytes.maketrans(b"+/", b"-_")


_b2a = binascii.b2a_base64


def _b64(data: bytes) -> str:
    """base64url without padding (what ``urlsafe_b64encode`` and a strip give)."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE, b"=").decode()


def _unb64(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded, altchars=b"-_", validate=True)


class TokenSigner:
    """Sign and verify impression tokens with one secret."""

    __slots__ = ("_keyed",)

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("the token secret must not be empty")
        # The keyed inner and outer hash states are computed once; each token
        # copies them instead of re-deriving them from the secret. CPython's
        # HMAC wraps an OpenSSL one with the same copy, update and digest;
        # copying that one directly skips the wrapper's Python-level copy.
        keyed = hmac.new(secret, digestmod=hashlib.sha256)
        self._keyed = getattr(keyed, "_hmac", None) or keyed

    def _mac(self, payload: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(payload)
        return mac.digest()[:MAC_BYTES]

    def sign(self, token: ImpressionToken) -> str:
        return self.sign_fields(*token)

    def sign_fields(self, *fields: object) -> str:
        """:meth:`sign` of ``ImpressionToken(*fields)``, without building it."""
        payload = orjson.dumps([VERSION, *fields])
        mac = self._keyed.copy()
        mac.update(payload)
        # As _b64 of each part, with one translation for both: "." is kept,
        # and "=" only ever pads the end of a part.
        mac_text = _b2a(mac.digest()[:MAC_BYTES], newline=False)
        text = _b2a(payload, newline=False) + b"." + mac_text
        return text.translate(_URLSAFE, b"=").decode()

    def verify(self, text: str, now_ms: int, ttl_ms: int) -> ImpressionToken:
        """Return the token's facts.

        Raises
        ------
        TokenError
            When the token is malformed (its payload included: a signed
            payload of another shape is "token payload is malformed"), its mac
            does not match, its propensity is not in (0, 1], or it was issued
            more than ``ttl_ms`` ago (or in the future beyond a minute).
        """
        head, dot, tail = text.partition(".")
        if not dot or len(text) > 4096:
            raise TokenError("token is not one /v1/select issued (payload.mac)")
        try:
            payload, mac = _unb64(head), _unb64(tail)
        except (ValueError, TypeError):  # binascii.Error is a ValueError
            raise TokenError("token is not base64url") from None
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise TokenError("token signature does not match")
        token = _parse(payload)
        if not -60_000 <= now_ms - token.issued_ms <= ttl_ms:
            raise TokenError("token expired")
        return token


def _parse(payload: bytes) -> ImpressionToken:
    """The token of a payload whose mac matched, checked field by field.

    A matching mac proves the gateway signed the bytes, not that they have
    today's shape (a gateway of another release, a tool holding the secret),
    so nothing past this point may meet an unexpected type.
    """
    try:
        fields = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise TokenError(MALFORMED) from None
    if not isinstance(fields, list) or not fields:
        raise TokenError(MALFORMED)
    if not _is_int(fields[0]) or fields[0] != VERSION:
        raise TokenError(f"token version {fields[0]!r} is not {VERSION}")
    values = fields[1:]
    if len(values) != len(_FIELD_CHECKS) or not all(
        check(value) for check, value in zip(_FIELD_CHECKS, values, strict=True)
    ):
        raise TokenError(MALFORMED)
    token = ImpressionToken(*values)
    propensity = float(token.propensity)
    # The learner refuses such impressions for off-policy estimates; refusing
    # them here tells the client instead of dead-lettering them later.
    if not (math.isfinite(propensity) and 0.0 < propensity <= 1.0):
        raise TokenError(f"token propensity {token.propensity!r} is not in (0, 1]")
    return token._replace(propensity=propensity)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_str(value: object) -> bool:
    return isinstance(value, str)


_NOT_STR: dict[str, Callable[[object], bool]] = {
    "model_version": _is_int,
    "propensity": _is_number,
    "issued_ms": _is_int,
    "experiment_version": _is_int,
}
_FIELD_CHECKS = tuple(_NOT_STR.get(name, _is_str) for name in ImpressionToken._fields)
"""One check per :class:`ImpressionToken` field, in order: ids and names are
strings, versions and times integers, the propensity a number."""
