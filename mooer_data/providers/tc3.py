"""Tencent Cloud API 3.0 request signing (TC3-HMAC-SHA256), pure functions.

The adapter signs with :func:`sign_headers`; the emulator checks with :func:`verify`, so
both sides share one definition of the canonical request and cannot drift apart. The
steps follow the official SDK (``tencentcloud/common/abstract_client.py``, ``sign.py``):
canonical request -> string to sign -> key chained over date, service and
``tc3_request`` -> hex HMAC. Nothing here touches the network or the clock; callers pass
the timestamp.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping, Sequence

ALGORITHM = "TC3-HMAC-SHA256"
REQUEST_SUFFIX = "tc3_request"
DEFAULT_SIGNED_HEADERS = ("content-type", "host")
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_CLOCK_SKEW_SECONDS = 300  # beyond this the service answers AuthFailure.SignatureExpire


def utc_date(timestamp: int) -> str:
    """The credential-scope date: the UTC day of the request timestamp."""
    return datetime.fromtimestamp(int(timestamp), tz=timezone.utc).strftime("%Y-%m-%d")


def hashed_payload(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical_request(
    method: str,
    uri: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    payload_hash: str,
) -> str:
    """``headers`` maps lower-case names to values; the documented rule lower-cases and
    trims the values too (the SDK's values, application/json and the host, already are)."""
    lines = "".join(f"{name}:{headers[name].strip().lower()}\n" for name in signed_headers)
    return "\n".join((method.upper(), uri or "/", query, lines, ";".join(signed_headers), payload_hash))


def credential_scope(date: str, service: str) -> str:
    return f"{date}/{service}/{REQUEST_SUFFIX}"


def string_to_sign(timestamp: int, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return "\n".join((ALGORITHM, str(int(timestamp)), scope, digest))


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_key: str, date: str, service: str) -> bytes:
    return _hmac(_hmac(_hmac(("TC3" + secret_key).encode("utf-8"), date), service), REQUEST_SUFFIX)


def signature(secret_key: str, date: str, service: str, to_sign: str) -> str:
    return hmac.new(signing_key(secret_key, date, service), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def format_authorization(secret_id: str, date: str, service: str, signed_headers: Sequence[str], sig: str) -> str:
    return (
        f"{ALGORITHM} Credential={secret_id}/{credential_scope(date, service)}, "
        f"SignedHeaders={';'.join(signed_headers)}, Signature={sig}"
    )


def sign_headers(
    *,
    secret_id: str,
    secret_key: str,
    service: str,
    action: str,
    version: str,
    host: str,
    body: bytes,
    timestamp: int,
    region: str | None = None,
    content_type: str = "application/json",
    uri: str = "/",
    token: str | None = None,
    language: str | None = None,
) -> dict[str, str]:
    """Every header of a signed POST (JSON body) to the API 3.0 gateway, Authorization included."""
    headers = {
        "Host": host,
        "Content-Type": content_type,
        "X-TC-Action": action,
        "X-TC-Version": version,
        "X-TC-Timestamp": str(int(timestamp)),
    }
    if region:
        headers["X-TC-Region"] = region
    if token:
        headers["X-TC-Token"] = token
    if language:
        headers["X-TC-Language"] = language
    date = utc_date(timestamp)
    canonical = canonical_request(
        "POST", uri, "", {"content-type": content_type, "host": host}, DEFAULT_SIGNED_HEADERS, hashed_payload(body)
    )
    sig = signature(secret_key, date, service, string_to_sign(timestamp, credential_scope(date, service), canonical))
    headers["Authorization"] = format_authorization(secret_id, date, service, DEFAULT_SIGNED_HEADERS, sig)
    return headers


_AUTHORIZATION = re.compile(
    r"^(?P<algorithm>\S+) Credential=(?P<secret_id>[^/,\s]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<service>[^/,\s]+)/(?P<suffix>[^,\s]+),"
    r"\s*SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<signature>[0-9a-fA-F]+)$"
)


@dataclass(frozen=True)
class Authorization:
    secret_id: str
    date: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @classmethod
    def parse(cls, header: str) -> "Authorization":
        match = _AUTHORIZATION.match(header.strip())
        if not match:
            raise ValueError(
                f"expected '{ALGORITHM} Credential=<id>/<date>/<service>/{REQUEST_SUFFIX}, SignedHeaders=..., Signature=<hex>', "
                f"found a header of {len(header)} characters that does not fit"
            )
        if match["algorithm"] != ALGORITHM or match["suffix"] != REQUEST_SUFFIX:
            raise ValueError(f"expected algorithm {ALGORITHM} and scope suffix {REQUEST_SUFFIX}, found {match['algorithm']} and {match['suffix']}")
        signed = tuple(name.strip().lower() for name in match["signed"].split(";") if name.strip())
        return cls(match["secret_id"], match["date"], match["service"], signed, match["signature"].lower())


@dataclass(frozen=True)
class Rejection:
    """Why the gateway refuses a request: the service's own error code and message."""

    code: str
    message: str


def verify(
    *,
    method: str,
    uri: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    service: str,
    secrets: Mapping[str, str],
    now: float,
    max_skew: float = MAX_CLOCK_SKEW_SECONDS,
) -> Rejection | None:
    """Check a request the way the API gateway does; ``headers`` has lower-case names and
    ``secrets`` maps SecretId -> SecretKey. None when the signature holds."""
    raw = headers.get("authorization")
    if not raw:
        return Rejection("AuthFailure.InvalidAuthorization", "The Authorization header is missing; expected a TC3-HMAC-SHA256 signature.")
    try:
        auth = Authorization.parse(raw)
    except ValueError as error:
        return Rejection("AuthFailure.InvalidAuthorization", f"Authorization is not a valid TC3-HMAC-SHA256 header: {error}.")
    try:
        timestamp = int(headers.get("x-tc-timestamp", ""))
    except ValueError:
        return Rejection("InvalidParameter", "X-TC-Timestamp must be an integer number of seconds since the epoch.")
    if abs(now - timestamp) > max_skew:
        return Rejection(
            "AuthFailure.SignatureExpire",
            f"Signature expired: the request timestamp differs from server time by {abs(now - timestamp):.0f} s (at most {max_skew:.0f} s allowed); check the local clock.",
        )
    if auth.secret_id not in secrets:
        return Rejection("AuthFailure.SecretIdNotFound", "The SecretId is not found, please ensure that your SecretId is correct.")
    if auth.date != utc_date(timestamp) or auth.service != service:
        return Rejection(
            "AuthFailure.SignatureFailure",
            f"The credential scope does not match: expected {credential_scope(utc_date(timestamp), service)}, found {credential_scope(auth.date, auth.service)}.",
        )
    missing = [name for name in DEFAULT_SIGNED_HEADERS if name not in auth.signed_headers]
    absent = [name for name in auth.signed_headers if name not in headers]
    if missing or absent:
        return Rejection(
            "AuthFailure.SignatureFailure",
            f"SignedHeaders must include content-type and host and name only headers that were sent; missing {missing}, not sent {absent}.",
        )
    payload = UNSIGNED_PAYLOAD if headers.get("x-tc-content-sha256") == UNSIGNED_PAYLOAD else None
    payload_hash = hashed_payload(payload.encode() if payload else body)
    canonical = canonical_request(method, uri, query, headers, auth.signed_headers, payload_hash)
    expected = signature(secrets[auth.secret_id], auth.date, service, string_to_sign(timestamp, credential_scope(auth.date, service), canonical))
    if not hmac.compare_digest(expected, auth.signature):
        return Rejection(
            "AuthFailure.SignatureFailure",
            "The provided credentials could not be validated. Please check your signature is correct.",
        )
    return None
