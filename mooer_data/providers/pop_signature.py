"""Alibaba Cloud POP RPC signature, version 1.0 (HMAC-SHA1).

Pure functions, shared by the FileTrans adapter (to sign) and the emulator (to verify),
and checked against aliyunsdkcore's ``rpc_signature_composer`` in the tests.

The scheme: every parameter, the query ones and the form-body ones alike, is sorted by
name and percent-encoded the RFC 3986 way (space -> %20, ``*`` -> %2A, ``~`` kept), joined
``k=v&...``; the string to sign is ``METHOD&%2F&`` + that canonical string percent-encoded
once more; the signature is Base64(HMAC-SHA1(AccessKeySecret + "&", string to sign)) and
travels in the query string as ``Signature``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import urllib.parse
import uuid

SIGNATURE_METHOD = "HMAC-SHA1"
SIGNATURE_VERSION = "1.0"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def percent_encode(value: str) -> str:
    """RFC 3986: only ``A-Z a-z 0-9 - _ . ~`` stay as they are (UTF-8 underneath)."""
    return urllib.parse.quote(str(value), safe="~")


def canonical_query(params: dict[str, str]) -> str:
    """Sorted, encoded ``k=v&...``; also the exact query string we send, so what is
    signed is byte for byte what the server decodes."""
    return "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items()))


def string_to_sign(method: str, params: dict[str, str]) -> str:
    """``params`` are all signed parameters (query and form body), without Signature."""
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical_query(params))}"


def sign(method: str, params: dict[str, str], access_key_secret: str) -> str:
    key = (access_key_secret + "&").encode("utf-8")
    digest = hmac.new(key, string_to_sign(method, params).encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def common_parameters(
    access_key_id: str,
    action: str,
    version: str,
    region_id: str,
    *,
    nonce: str | None = None,
    timestamp: str | None = None,
) -> dict[str, str]:
    """The common parameters of every RPC call; a fresh nonce per request stops replay,
    so callers pass ``nonce``/``timestamp`` only to reproduce a signature."""
    return {
        "AccessKeyId": access_key_id,
        "Action": action,
        "Format": "JSON",
        "RegionId": region_id,
        "SignatureMethod": SIGNATURE_METHOD,
        "SignatureNonce": nonce or str(uuid.uuid4()),
        "SignatureVersion": SIGNATURE_VERSION,
        "Timestamp": timestamp or utc_timestamp(),
        "Version": version,
    }


def utc_timestamp(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.astimezone(dt.timezone.utc).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> dt.datetime:
    """ISO-8601 UTC as POP sends it; ValueError when it is not that."""
    return dt.datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=dt.timezone.utc)


def signatures_match(expected: str, found: str) -> bool:
    return hmac.compare_digest(expected.encode("utf-8"), found.encode("utf-8"))
