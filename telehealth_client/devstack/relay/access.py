"""Access Manager v3: tokens (mint, read, revoke), permission checks and request signatures.

Tokens have PubNub's layout so that the SDKs' ``parse_token`` reads them: a CBOR map whose
structural keys are byte strings (``v``, ``t``, ``ttl``, ``res``, ``pat``, ``meta``, ``uuid``,
``sig``), resource names as text, permissions as PubNub's bit masks, encoded as URL-safe base64
with padding. ``sig`` is an HMAC-SHA256 with the secret key over the map without ``sig``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from enum import IntFlag
from typing import Any
from urllib.parse import quote

import cbor2

from .clock import Clock
from .errors import RelayError, access_denied, service_error


class Permission(IntFlag):
    READ = 1
    WRITE = 2
    MANAGE = 4
    DELETE = 8
    CREATE = 16
    GET = 32
    UPDATE = 64
    JOIN = 128


# Grant request resource types -> the token's CBOR keys (spaces/users are the newer names).
_WIRE_KINDS = {"channels": "chan", "spaces": "chan", "groups": "grp", "uuids": "uuid", "users": "uuid"}
_TOKEN_KINDS = ("chan", "grp", "uuid", "usr", "spc")
_PAYLOAD_NAMES = {"chan": "channels", "grp": "channel-groups", "uuid": "uuids"}
MAX_TTL_MINUTES = 43_200  # PubNub's limit: 30 days


@dataclass(frozen=True, slots=True)
class Need:
    """One permission a request needs: ``kind`` is ``chan``, ``grp`` or ``uuid``."""

    kind: str
    name: str
    permission: Permission


@dataclass(frozen=True, slots=True)
class Grant:
    issued: int
    ttl_minutes: int
    authorized_uuid: str | None
    resources: dict[str, dict[str, int]]
    patterns: dict[str, dict[str, int]]
    signature: bytes

    def expires_at(self) -> float:
        return self.issued + self.ttl_minutes * 60

    def allows(self, need: Need) -> bool:
        exact = self.resources.get(need.kind, {})
        if need.name in exact:
            # A listed resource is decided by its own entry, not widened by a pattern.
            return _has(exact[need.name], need.permission)
        return any(
            _has(bits, need.permission) and _pattern(pattern).search(need.name) is not None
            for pattern, bits in self.patterns.get(need.kind, {}).items()
        )


@dataclass(slots=True)
class TokenAuthority:
    secret_key: str
    clock: Clock
    _revoked: set[bytes] = field(default_factory=set)

    def mint(self, request: Any) -> str:
        """A token for a grant request body as the SDKs send it; 400 when it is malformed."""
        if not isinstance(request, dict):
            raise _bad_grant("Invalid request body")
        ttl = request.get("ttl")
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_TTL_MINUTES:
            raise _bad_grant(f"Invalid ttl: must be an integer from 1 to {MAX_TTL_MINUTES} minutes")
        permissions = request.get("permissions")
        if not isinstance(permissions, dict):
            raise _bad_grant("Invalid permissions")
        resources = _wire_resources(permissions.get("resources"), patterns=False)
        patterns = _wire_resources(permissions.get("patterns"), patterns=True)
        if not any(resources.values()) and not any(patterns.values()):
            raise _bad_grant("No resources specified")
        meta = permissions.get("meta", {})
        if not isinstance(meta, dict):
            raise _bad_grant("Invalid meta: must be an object")
        authorized = permissions.get("uuid")
        if authorized is not None and (not isinstance(authorized, str) or not authorized):
            raise _bad_grant("Invalid uuid")
        body: dict[bytes, Any] = {
            b"v": 2,
            b"t": int(self.clock()),
            b"ttl": ttl,
            b"res": {kind.encode(): resources.get(kind, {}) for kind in _TOKEN_KINDS},
            b"pat": {kind.encode(): patterns.get(kind, {}) for kind in _TOKEN_KINDS},
            b"meta": meta,
        }
        if authorized is not None:
            body[b"uuid"] = authorized
        body[b"sig"] = self._sign(body)
        return base64.urlsafe_b64encode(cbor2.dumps(body)).decode("ascii")

    def read(self, token: str) -> Grant:
        """The grant in ``token`` if its signature is ours; expiry and revocation are not checked here."""
        try:
            padded = token + "=" * (-len(token) % 4)
            raw = cbor2.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        except (ValueError, binascii.Error, cbor2.CBORDecodeError, UnicodeEncodeError):
            raise access_denied("Invalid token") from None
        if not isinstance(raw, dict) or not isinstance(raw.get(b"sig"), bytes):
            raise access_denied("Invalid token")
        signature = raw.pop(b"sig")
        if not hmac.compare_digest(signature, self._sign(raw)):
            raise access_denied("Invalid token")
        return Grant(
            issued=int(raw[b"t"]),
            ttl_minutes=int(raw[b"ttl"]),
            authorized_uuid=raw.get(b"uuid"),
            resources=_token_resources(raw.get(b"res")),
            patterns=_token_resources(raw.get(b"pat")),
            signature=signature,
        )

    def revoke(self, token: str) -> None:
        try:
            grant = self.read(token)
        except RelayError:
            raise _bad_grant("Invalid token") from None
        self._revoked.add(grant.signature)

    def check(self, token: str | None, uuid: str | None, needs: list[Need]) -> None:
        """Raise PubNub's 403 unless ``token`` is valid, current, held by ``uuid`` and covers ``needs``."""
        if not token:
            raise access_denied(payload=_denied_payload(needs))
        grant = self.read(token)
        if grant.signature in self._revoked:
            raise access_denied("Token is revoked.")
        if self.clock() >= grant.expires_at():
            raise access_denied("Token is expired.")
        if grant.authorized_uuid is not None and grant.authorized_uuid != uuid:
            raise access_denied("Token is not authorized for this uuid.", {"uuids": [uuid or ""]})
        denied = [need for need in needs if not grant.allows(need)]
        if denied:
            raise access_denied(payload=_denied_payload(denied))

    def _sign(self, body: dict[bytes, Any]) -> bytes:
        return hmac.new(self.secret_key.encode(), cbor2.dumps(body), hashlib.sha256).digest()


def verify_signature(
    *,
    secret_key: str,
    publish_key: str,
    subscribe_key: str,
    method: str,
    raw_path: str,
    query: dict[str, str],
    body: str,
) -> bool:
    """True if the request is signed with the secret key, False if unsigned, 403 if signed wrongly.

    Two schemes, as the SDKs sign (see their ``sign_request``): v2 over method, publish key, path,
    sorted percent-encoded query and body; and the older one for POST publish over subscribe key,
    publish key, path and query.
    """
    signature = query.get("signature")
    if signature is None:
        return False
    if "timestamp" not in query:
        raise access_denied("Signature Does Not Match")
    encoded = "&".join(f"{k}={_pam_encode(query[k])}" for k in sorted(query) if k != "signature")
    if signature.startswith("v2."):
        signed = f"{method.upper()}\n{publish_key}\n{raw_path}\n{encoded}\n{body}"
        expected = "v2." + _hmac_b64(secret_key, signed).rstrip("=")
    else:
        expected = _hmac_b64(secret_key, f"{subscribe_key}\n{publish_key}\n{raw_path}\n{encoded}")
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise access_denied("Signature Does Not Match")
    return True


def _pam_encode(value: str) -> str:
    # Percent-encode everything but letters, digits and "_.-", as the SDKs do before signing.
    return quote(value, safe="").replace("~", "%7E")


def _hmac_b64(secret_key: str, text: str) -> str:
    digest = hmac.new(secret_key.encode(), text.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")


def _has(bits: int, permission: Permission) -> bool:
    return bits & permission == permission


_compiled: dict[str, re.Pattern[str]] = {}


def _pattern(pattern: str) -> re.Pattern[str]:
    compiled = _compiled.get(pattern)
    if compiled is None:
        if len(_compiled) > 1024:
            _compiled.clear()
        compiled = _compiled[pattern] = re.compile(pattern)
    return compiled


def _wire_resources(value: Any, *, patterns: bool) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    if value is None:
        return out
    if not isinstance(value, dict):
        raise _bad_grant("Invalid resources")
    for wire_kind, entries in value.items():
        kind = _WIRE_KINDS.get(wire_kind)
        if kind is None or not isinstance(entries, dict):
            raise _bad_grant(f"Invalid resource type: {wire_kind}")
        for name, bits in entries.items():
            if not isinstance(bits, int) or isinstance(bits, bool) or not 0 <= bits <= 255:
                raise _bad_grant("Invalid permission bits")
            if patterns:
                try:
                    _pattern(name)
                except re.error:
                    raise _bad_grant("Invalid pattern") from None
            out.setdefault(kind, {})[name] = out.get(kind, {}).get(name, 0) | bits
    return out


def _token_resources(value: Any) -> dict[str, dict[str, int]]:
    if not isinstance(value, dict):
        return {}
    out: dict[str, dict[str, int]] = {}
    for kind, entries in value.items():
        name = kind.decode() if isinstance(kind, bytes) else str(kind)
        if isinstance(entries, dict):
            out[name] = {str(k): int(v) for k, v in entries.items()}
    return out


def _denied_payload(needs: list[Need]) -> dict[str, list[str]]:
    payload: dict[str, list[str]] = {}
    for need in needs:
        names = payload.setdefault(_PAYLOAD_NAMES.get(need.kind, need.kind), [])
        if need.name not in names:
            names.append(need.name)
    return payload


def _bad_grant(message: str) -> RelayError:
    return service_error(400, message, "Access Manager")
