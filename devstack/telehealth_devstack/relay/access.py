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
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntFlag
from typing import Any
from urllib.parse import quote

import cbor2

from .clock import Clock
from .errors import RelayError, access_denied, detailed_error


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
MAX_CLOCK_SKEW = 60  # seconds: PubNub refuses signed requests whose timestamp is further off


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
            raise _bad_grant("Invalid request body", "The body must be a JSON object.", "body")
        ttl = request.get("ttl")
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_TTL_MINUTES:
            raise _bad_grant("Invalid ttl", f"Range should be 1 to {MAX_TTL_MINUTES} minute(s).", "ttl")
        permissions = request.get("permissions")
        if not isinstance(permissions, dict):
            raise _bad_grant("Invalid permissions", "Expected an object.", "permissions")
        resources = _wire_resources(permissions.get("resources"), "resources")
        patterns = _wire_resources(permissions.get("patterns"), "patterns")
        if not any(resources.values()) and not any(patterns.values()):
            raise _bad_grant("Invalid permissions", "No resources specified.", "permissions")
        meta = permissions.get("meta", {})
        if not isinstance(meta, dict):
            raise _bad_grant("Invalid meta", "Expected an object.", "permissions.meta")
        authorized = permissions.get("uuid")
        if authorized is not None and (not isinstance(authorized, str) or not authorized):
            raise _bad_grant("Invalid uuid", "Expected a non-empty string.", "permissions.uuid")
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

    def revoke(self, token: str) -> Grant:
        """Revoke ``token`` (PubNub's 400 "Invalid token" when it is not ours or already expired)."""
        try:
            grant = self.read(token)
        except RelayError:
            raise _bad_revoke("Token is not valid.") from None
        if self.clock() >= grant.expires_at():
            raise _bad_revoke("Token expired.")
        self._revoked.add(grant.signature)
        return grant

    def restore_revoked(self, signatures: Iterable[bytes]) -> None:
        """Revocations kept from an earlier run (see ``persistence``)."""
        self._revoked.update(signatures)

    def check(self, token: str | None, uuid: str | None, needs: list[Need]) -> Grant:
        """Raise PubNub's 403 unless ``token`` is valid, current, held by ``uuid`` and covers ``needs``;
        returns its grant."""
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
        return grant

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
    now: float,
) -> bool:
    """True if the request is signed with the secret key, False if unsigned, 403 if signed wrongly.

    A signature is good only with a ``timestamp`` within ``MAX_CLOCK_SKEW`` of ``now`` (the
    relay's clock), as PubNub requires: an old signed grant cannot be replayed to mint tokens.

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
    try:
        timestamp = int(query["timestamp"])
    except ValueError:
        timestamp = None
    if timestamp is None or abs(timestamp - now) > MAX_CLOCK_SKEW:
        raise detailed_error(
            403,
            "Signature Does Not Match",
            source="signature",
            detail=f"The timestamp must be within {MAX_CLOCK_SKEW} seconds of the server's time.",
            location="timestamp",
            location_type="query",
        )
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


def _wire_resources(value: Any, section: str) -> dict[str, dict[str, int]]:
    """``permissions.resources`` or ``permissions.patterns`` of a grant request, checked as PubNub does."""
    out: dict[str, dict[str, int]] = {}
    where = f"permissions.{section}"
    if value is None:
        return out
    if not isinstance(value, dict):
        raise _bad_grant("Invalid permissions", "Expected an object.", where)
    for wire_kind, entries in value.items():
        kind = _WIRE_KINDS.get(wire_kind)
        if kind is None or not isinstance(entries, dict):
            raise _bad_grant("Invalid permissions", "Unknown resource type.", f"{where}.{wire_kind}")
        for name, bits in entries.items():
            location = f"{where}.{wire_kind}.{name}"
            if not isinstance(bits, int) or isinstance(bits, bool) or not 0 <= bits <= 255:
                raise _bad_grant("Invalid permissions", "Expected permission bits from 0 to 255.", location)
            if bits == 0:
                detail = f"Unexpected value: `{location}` must be positive and non-zero."
                raise _bad_grant("Invalid permissions", detail, location)
            if section == "patterns":
                problem = pattern_problem(name)
                if problem is not None:
                    raise _bad_grant("Invalid RegExp", problem, location)
            out.setdefault(kind, {})[name] = out.get(kind, {}).get(name, 0) | bits
    return out


_NON_CAPTURING = "Only non-capturing groups are allowed. Try replacing `(` with `(?:`."
_GROUP_OPENERS = ("(?:", "(?=", "(?!", "(?<=", "(?<!")
_COUNTED_REPEAT = re.compile(r"\{\d+(?:,\d*)?\}")


def pattern_problem(pattern: str) -> str | None:
    """Why PubNub refuses ``pattern`` as a grant's RegExp, in its words; None when it is accepted.

    PubNub allows no capturing groups and no possessive quantifiers (``++``, ``*+``, ``?+``,
    ``{n}+``; Python 3.11 would compile those), and nothing that does not compile.
    """
    index, in_class, after_repeat = 0, False, False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index, after_repeat = index + 2, False
            continue
        if in_class:
            in_class = char != "]"
            index += 1
            continue
        counted = _COUNTED_REPEAT.match(pattern, index) if char == "{" else None
        if char == "+" and after_repeat:
            return "Syntax error: multiple repeat."
        if char == "(":
            if not pattern.startswith(_GROUP_OPENERS, index):
                return _NON_CAPTURING
            # Step over "(?": that "?" is no quantifier (an escaped "(" never gets here).
            index, after_repeat = index + 2, False
            continue
        if char == "[":
            # A "]" first in a class (after an optional "^") is a literal, not its end.
            index += 2 if pattern.startswith("^", index + 1) else 1
            index += 1 if pattern.startswith("]", index) else 0
            in_class, after_repeat = True, False
            continue
        if counted is not None:
            index, after_repeat = counted.end(), True
            continue
        after_repeat = char in "*+?"
        index += 1
    try:
        _pattern(pattern)
    except re.error as error:
        return f"Syntax error: {error.msg}."
    return None


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


def _bad_grant(message: str, detail: str, location: str) -> RelayError:
    return detailed_error(
        400, message, source="grant", detail=detail, location=location, location_type="body"
    )


def _bad_revoke(detail: str) -> RelayError:
    return detailed_error(
        400, "Invalid token", source="revoke", detail=detail, location="token", location_type="path"
    )
