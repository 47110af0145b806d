"""The relay's Access Manager rules as pure functions: every refusal's exact answer, the token's
bytes, the boundaries of ttl, permission bits, expiry and signature timestamps.

The token authority runs on a ManualClock; signatures are computed with the PubNub SDK's own
signing helpers, so the relay is held to what real clients send.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import cbor2
import pytest
from pubnub import utils

from telehealth_devstack.relay import ManualClock
from telehealth_devstack.relay.access import (
    Grant,
    Need,
    Permission,
    TokenAuthority,
    pattern_problem,
    verify_signature,
)
from telehealth_devstack.relay.errors import RelayError

SECRET = "sec-c-unit-test"
NOW = 1_700_000_000.75  # a fractional clock: tokens carry whole seconds
CHANNEL = "consultation.prov1.pat1"
OTHER = "consultation.prov2.pat9"
NON_CAPTURING = "Only non-capturing groups are allowed. Try replacing `(` with `(?:`."

# pattern_problem scans a pattern in a loop (grants with patterns call it): a scan that stops
# advancing must fail a test at once, not hang it. Every test here takes milliseconds; the limit
# only catches a loop that never ends.
pytestmark = pytest.mark.timeout(10)


def authority(clock: ManualClock | None = None) -> TokenAuthority:
    return TokenAuthority(secret_key=SECRET, clock=clock or ManualClock(NOW))


def permissions(**sections: Any) -> dict[str, Any]:
    return {"ttl": 15, "permissions": sections}


def refusal(call: Any, *args: Any) -> tuple[int, Any]:
    with pytest.raises(RelayError) as caught:
        call(*args)
    return caught.value.status, caught.value.body


def grant_refusal(message: str, detail: str, location: str) -> tuple[int, Any]:
    details = [{"message": detail, "location": location, "locationType": "body"}]
    return 400, {
        "status": 400,
        "service": "Access Manager",
        "error": {"message": message, "source": "grant", "details": details},
    }


def denied(message: str = "Forbidden", payload: dict[str, list[str]] | None = None) -> tuple[int, Any]:
    body: dict[str, Any] = {"status": 403, "error": True, "service": "Access Manager", "message": message}
    if payload is not None:
        body["payload"] = payload
    return 403, body


def decoded(token: str) -> dict[bytes, Any]:
    body: dict[bytes, Any] = cbor2.loads(base64.urlsafe_b64decode(token))
    return body


def signed_token(body: dict[Any, Any], secret: str = SECRET) -> str:
    """A token built by hand (as another implementation might lay it out), signed with ``secret``."""
    signature = hmac.new(secret.encode(), cbor2.dumps(body), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(cbor2.dumps({**body, b"sig": signature})).decode()


def minted(**sections: Any) -> str:
    return authority().mint(permissions(**sections))


# -- mint: the token's bytes ----------------------------------------------------------------------


def test_a_minted_token_has_pubnubs_layout_and_an_hmac_over_the_rest() -> None:
    token = authority().mint(
        {
            "ttl": 15,
            "permissions": {
                "resources": {"channels": {CHANNEL: 3}, "uuids": {"pat1": 96}},
                "patterns": {"channels": {"^waiting-room\\.[a-z]+$": 2}},
                "meta": {"role": "patient"},
                "uuid": "pat1",
            },
        }
    )
    assert token.isascii() and len(token) % 4 == 0  # URL-safe base64 with its padding
    body = decoded(token)
    signature = body.pop(b"sig")
    assert body == {
        b"v": 2,
        b"t": 1_700_000_000,
        b"ttl": 15,
        b"res": {b"chan": {CHANNEL: 3}, b"grp": {}, b"uuid": {"pat1": 96}, b"usr": {}, b"spc": {}},
        b"pat": {b"chan": {"^waiting-room\\.[a-z]+$": 2}, b"grp": {}, b"uuid": {}, b"usr": {}, b"spc": {}},
        b"meta": {"role": "patient"},
        b"uuid": "pat1",
    }
    assert signature == hmac.new(SECRET.encode(), cbor2.dumps(body), hashlib.sha256).digest()


def test_a_token_without_uuid_or_meta_binds_no_user_and_has_empty_meta() -> None:
    body = decoded(minted(resources={"channels": {CHANNEL: 1}}))
    assert b"uuid" not in body
    assert body[b"meta"] == {}


@pytest.mark.parametrize(
    ("wire_kind", "token_kind"),
    [("channels", b"chan"), ("spaces", b"chan"), ("groups", b"grp"), ("uuids", b"uuid"), ("users", b"uuid")],
)
def test_each_grant_resource_type_lands_under_its_token_key(wire_kind: str, token_kind: bytes) -> None:
    body = decoded(minted(resources={wire_kind: {"r1": 1}}, patterns={wire_kind: {"^p$": 2}}))
    assert body[b"res"][token_kind] == {"r1": 1}
    assert body[b"pat"][token_kind] == {"^p$": 2}


def test_the_same_resource_under_both_names_gets_both_permissions() -> None:
    body = decoded(minted(resources={"channels": {"lobby": 1, "a": 4}, "spaces": {"lobby": 2}}))
    assert body[b"res"][b"chan"] == {"lobby": 3, "a": 4}


def test_resources_alone_or_patterns_alone_are_enough() -> None:
    assert decoded(minted(resources={"uuids": {"pat1": 32}}))[b"res"][b"uuid"] == {"pat1": 32}
    assert decoded(minted(patterns={"uuids": {"^pat": 32}}))[b"pat"][b"uuid"] == {"^pat": 32}


@pytest.mark.parametrize("ttl", [1, 43_200])
def test_the_ttl_range_ends_are_accepted(ttl: int) -> None:
    body = decoded(authority().mint({"ttl": ttl, "permissions": {"resources": {"channels": {CHANNEL: 1}}}}))
    assert body[b"ttl"] == ttl


@pytest.mark.parametrize("bits", [1, 255])
def test_the_permission_bit_range_ends_are_accepted(bits: int) -> None:
    assert decoded(minted(resources={"channels": {CHANNEL: bits}}))[b"res"][b"chan"] == {CHANNEL: bits}


def test_a_resource_name_is_not_judged_as_a_regexp() -> None:
    assert decoded(minted(resources={"channels": {"(odd)": 1}}))[b"res"][b"chan"] == {"(odd)": 1}


# -- mint: every refusal, as PubNub words it -------------------------------------------------------


@pytest.mark.parametrize("body", [[], "grant", None, 15])
def test_a_body_that_is_not_an_object_is_refused(body: Any) -> None:
    assert refusal(authority().mint, body) == grant_refusal(
        "Invalid request body", "The body must be a JSON object.", "body"
    )


@pytest.mark.parametrize("ttl", ["missing", None, "15", 15.0, True, 0, -1, 43_201])
def test_a_ttl_that_is_not_a_whole_number_of_minutes_in_range_is_refused(ttl: Any) -> None:
    request: dict[str, Any] = {"permissions": {"resources": {"channels": {CHANNEL: 1}}}}
    if ttl != "missing":
        request["ttl"] = ttl
    assert refusal(authority().mint, request) == grant_refusal(
        "Invalid ttl", "Range should be 1 to 43200 minute(s).", "ttl"
    )


@pytest.mark.parametrize("value", [None, [], "all"])
def test_permissions_that_are_not_an_object_are_refused(value: Any) -> None:
    assert refusal(authority().mint, {"ttl": 15, "permissions": value}) == grant_refusal(
        "Invalid permissions", "Expected an object.", "permissions"
    )


@pytest.mark.parametrize("section", ["resources", "patterns"])
def test_a_resources_or_patterns_section_that_is_not_an_object_is_refused(section: str) -> None:
    assert refusal(authority().mint, permissions(**{section: ["channels"]})) == grant_refusal(
        "Invalid permissions", "Expected an object.", f"permissions.{section}"
    )


@pytest.mark.parametrize(
    "sections",
    [{}, {"resources": {}, "patterns": {}}, {"resources": {"channels": {}}, "patterns": {"uuids": {}}}],
)
def test_a_grant_of_nothing_is_refused(sections: dict[str, Any]) -> None:
    assert refusal(authority().mint, permissions(**sections)) == grant_refusal(
        "Invalid permissions", "No resources specified.", "permissions"
    )


@pytest.mark.parametrize("section", ["resources", "patterns"])
def test_an_unknown_resource_type_is_refused_where_it_is(section: str) -> None:
    assert refusal(authority().mint, permissions(**{section: {"rooms": {"a": 1}}})) == grant_refusal(
        "Invalid permissions", "Unknown resource type.", f"permissions.{section}.rooms"
    )


def test_a_resource_type_whose_entries_are_not_an_object_is_refused() -> None:
    assert refusal(authority().mint, permissions(resources={"channels": [CHANNEL]})) == grant_refusal(
        "Invalid permissions", "Unknown resource type.", "permissions.resources.channels"
    )


@pytest.mark.parametrize("bits", ["3", 3.0, True, -1, 256, None])
def test_permission_bits_outside_0_to_255_are_refused(bits: Any) -> None:
    location = f"permissions.resources.channels.{CHANNEL}"
    assert refusal(authority().mint, permissions(resources={"channels": {CHANNEL: bits}})) == grant_refusal(
        "Invalid permissions", "Expected permission bits from 0 to 255.", location
    )


@pytest.mark.parametrize("section", ["resources", "patterns"])
def test_a_resource_with_no_permission_is_refused(section: str) -> None:
    location = f"permissions.{section}.uuids.pat1"
    assert refusal(authority().mint, permissions(**{section: {"uuids": {"pat1": 0}}})) == grant_refusal(
        "Invalid permissions", f"Unexpected value: `{location}` must be positive and non-zero.", location
    )


def test_a_pattern_pubnub_refuses_is_refused_with_its_reason() -> None:
    assert refusal(authority().mint, permissions(patterns={"channels": {"(a)": 1}})) == grant_refusal(
        "Invalid RegExp", NON_CAPTURING, "permissions.patterns.channels.(a)"
    )


@pytest.mark.parametrize("meta", [None, [], "patient"])
def test_meta_that_is_not_an_object_is_refused(meta: Any) -> None:
    request = permissions(resources={"channels": {CHANNEL: 1}}, meta=meta)
    assert refusal(authority().mint, request) == grant_refusal(
        "Invalid meta", "Expected an object.", "permissions.meta"
    )


@pytest.mark.parametrize("uuid", ["", 7, ["pat1"]])
def test_an_authorized_uuid_that_is_not_a_non_empty_string_is_refused(uuid: Any) -> None:
    request = permissions(resources={"channels": {CHANNEL: 1}}, uuid=uuid)
    assert refusal(authority().mint, request) == grant_refusal(
        "Invalid uuid", "Expected a non-empty string.", "permissions.uuid"
    )


# -- read ------------------------------------------------------------------------------------------


def test_read_gives_back_what_was_granted() -> None:
    token = authority().mint(
        {
            "ttl": 30,
            "permissions": {
                "resources": {"channels": {CHANNEL: 3}},
                "patterns": {"uuids": {"^pat": 32}},
                "uuid": "pat1",
            },
        }
    )
    grant = authority().read(token)
    assert grant.issued == 1_700_000_000
    assert grant.ttl_minutes == 30
    assert grant.expires_at() == 1_700_000_000 + 30 * 60
    assert grant.authorized_uuid == "pat1"
    assert grant.resources == {"chan": {CHANNEL: 3}, "grp": {}, "uuid": {}, "usr": {}, "spc": {}}
    assert grant.patterns == {"chan": {}, "grp": {}, "uuid": {"^pat": 32}, "usr": {}, "spc": {}}
    assert grant.signature == decoded(token)[b"sig"]


def test_read_accepts_a_token_without_its_padding() -> None:
    # Tokens of every length modulo 4 (names of growing length shift it), each read unpadded.
    seen = set()
    for length in range(1, 9):
        token = minted(resources={"channels": {"c" * length: 1}})
        unpadded = token.rstrip("=")
        seen.add(len(token) - len(unpadded))
        assert authority().read(unpadded).resources["chan"] == {"c" * length: 1}
    assert seen == {0, 1, 2}


def test_resources_written_with_text_keys_are_read_and_odd_sections_are_ignored() -> None:
    token = signed_token(
        {
            b"v": 2,
            b"t": 1_700_000_000,
            b"ttl": 5,
            b"res": {"chan": {CHANNEL: 1}, b"grp": "not-a-map", b"uuid": {"pat1": 32}},
            b"pat": ["not", "a", "map"],
        }
    )
    grant = authority().read(token)
    assert grant.resources == {"chan": {CHANNEL: 1}, "uuid": {"pat1": 32}}
    assert grant.patterns == {}
    assert grant.authorized_uuid is None


@pytest.mark.parametrize(
    "token",
    [
        "not-a-token",
        "tökén",  # not ASCII
        "",
        base64.urlsafe_b64encode(b"\xff\xff").decode(),  # not CBOR
        base64.urlsafe_b64encode(cbor2.dumps([1, 2])).decode(),  # CBOR, not a map
        base64.urlsafe_b64encode(cbor2.dumps({b"v": 2, b"t": 1, b"ttl": 5})).decode(),  # no signature
        base64.urlsafe_b64encode(cbor2.dumps({b"v": 2, b"sig": "text"})).decode(),  # signature not bytes
        signed_token({b"v": 2, b"t": 1_700_000_000, b"ttl": 5, b"res": {}}, secret="sec-c-another"),
    ],
    ids=["garbage", "not-ascii", "empty", "not-cbor", "not-a-map", "no-sig", "text-sig", "other-secret"],
)
def test_a_token_that_is_not_ours_is_an_invalid_token(token: str) -> None:
    assert refusal(authority().read, token) == denied("Invalid token")


def test_a_token_whose_content_was_changed_after_signing_is_invalid() -> None:
    body = decoded(minted(resources={"channels": {"lobby": 2}}))
    body[b"res"][b"chan"] = {CHANNEL: 3}
    forged = base64.urlsafe_b64encode(cbor2.dumps(body)).decode()
    assert refusal(authority().read, forged) == denied("Invalid token")


# -- check -----------------------------------------------------------------------------------------

READ_CHANNEL = Need("chan", CHANNEL, Permission.READ)
WRITE_CHANNEL = Need("chan", CHANNEL, Permission.WRITE)


@pytest.mark.parametrize("token", [None, ""])
def test_no_token_is_forbidden_naming_each_resource_once_by_its_plural(token: str | None) -> None:
    needs = [
        READ_CHANNEL,
        WRITE_CHANNEL,
        Need("chan", OTHER, Permission.READ),
        Need("grp", "cg-clinic", Permission.READ),
        Need("uuid", "pat1", Permission.GET),
    ]
    assert refusal(authority().check, token, "pat1", needs) == denied(
        payload={"channels": [CHANNEL, OTHER], "channel-groups": ["cg-clinic"], "uuids": ["pat1"]}
    )


def test_a_token_covering_every_need_passes_and_only_the_denied_are_named() -> None:
    keeper = authority()
    token = keeper.mint(permissions(resources={"channels": {CHANNEL: 3}, "uuids": {"pat1": 32}}))
    keeper.check(token, "anyone", [READ_CHANNEL, WRITE_CHANNEL, Need("uuid", "pat1", Permission.GET)])
    needs = [READ_CHANNEL, Need("chan", OTHER, Permission.READ), Need("uuid", "pat1", Permission.UPDATE)]
    assert refusal(keeper.check, token, "anyone", needs) == denied(
        payload={"channels": [OTHER], "uuids": ["pat1"]}
    )


def test_a_token_is_current_until_the_second_its_ttl_ends() -> None:
    clock = ManualClock(NOW)
    keeper = authority(clock)
    token = keeper.mint({"ttl": 1, "permissions": {"resources": {"channels": {CHANNEL: 1}}}})
    clock.advance(1_700_000_060 - NOW - 0.25)
    keeper.check(token, "pat1", [READ_CHANNEL])
    clock.advance(0.25)
    assert refusal(keeper.check, token, "pat1", [READ_CHANNEL]) == denied("Token is expired.")


def test_a_token_bound_to_a_user_refuses_any_other_naming_the_caller() -> None:
    keeper = authority()
    token = keeper.mint(permissions(resources={"channels": {CHANNEL: 1}}, uuid="pat1"))
    keeper.check(token, "pat1", [READ_CHANNEL])
    assert refusal(keeper.check, token, "prov1", [READ_CHANNEL]) == denied(
        "Token is not authorized for this uuid.", {"uuids": ["prov1"]}
    )
    assert refusal(keeper.check, token, None, [READ_CHANNEL]) == denied(
        "Token is not authorized for this uuid.", {"uuids": [""]}
    )


def test_an_invalid_token_is_refused_before_anything_else() -> None:
    assert refusal(authority().check, "not-a-token", "pat1", [READ_CHANNEL]) == denied("Invalid token")


# -- revoke ------------------------------------------------------------------------------------


def revoke_refusal(detail: str) -> tuple[int, Any]:
    details = [{"message": detail, "location": "token", "locationType": "path"}]
    return 400, {
        "status": 400,
        "service": "Access Manager",
        "error": {"message": "Invalid token", "source": "revoke", "details": details},
    }


def test_a_revoked_token_is_refused_and_stays_refused_after_a_restart() -> None:
    keeper = authority()
    token = keeper.mint(permissions(resources={"channels": {CHANNEL: 1}}))
    grant = keeper.revoke(token)
    assert grant.signature == decoded(token)[b"sig"]
    assert refusal(keeper.check, token, "pat1", [READ_CHANNEL]) == denied("Token is revoked.")

    restarted = authority()
    restarted.check(token, "pat1", [READ_CHANNEL])
    restarted.restore_revoked([grant.signature])
    assert refusal(restarted.check, token, "pat1", [READ_CHANNEL]) == denied("Token is revoked.")


def test_revoking_a_token_that_is_not_ours_is_pubnubs_400() -> None:
    assert refusal(authority().revoke, "not-a-token") == revoke_refusal("Token is not valid.")


def test_a_token_can_be_revoked_until_the_second_it_expires() -> None:
    clock = ManualClock(NOW)
    keeper = authority(clock)
    first = keeper.mint({"ttl": 1, "permissions": {"resources": {"channels": {CHANNEL: 1}}}})
    second = keeper.mint({"ttl": 1, "permissions": {"resources": {"channels": {OTHER: 1}}}})
    clock.advance(1_700_000_060 - NOW - 0.25)
    keeper.revoke(first)
    clock.advance(0.25)
    assert refusal(keeper.revoke, second) == revoke_refusal("Token expired.")


# -- Grant.allows --------------------------------------------------------------------------------


def grant_of(resources: dict[str, dict[str, int]], patterns: dict[str, dict[str, int]]) -> Grant:
    return Grant(
        issued=0, ttl_minutes=1, authorized_uuid=None, resources=resources, patterns=patterns, signature=b""
    )


def test_a_grant_without_the_resource_kind_allows_nothing_of_it() -> None:
    assert not grant_of({}, {}).allows(READ_CHANNEL)
    assert grant_of({}, {"chan": {"prov1": 1}}).allows(READ_CHANNEL)  # a pattern is searched, not matched
    assert grant_of({"chan": {CHANNEL: 1}}, {}).allows(READ_CHANNEL)


def test_a_permission_needs_its_own_bit() -> None:
    grant = grant_of({"chan": {CHANNEL: Permission.READ | Permission.MANAGE}}, {})
    assert grant.allows(READ_CHANNEL)
    assert not grant.allows(WRITE_CHANNEL)
    assert not grant_of({}, {"chan": {"^consultation": 1}}).allows(WRITE_CHANNEL)


def test_a_listed_resource_is_not_widened_by_a_pattern() -> None:
    grant = grant_of({"chan": {CHANNEL: 1}}, {"chan": {"^consultation\\.": 3}})
    assert not grant.allows(WRITE_CHANNEL)
    assert grant.allows(Need("chan", OTHER, Permission.WRITE))


# -- pattern_problem ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    [
        r"^(?:a|b)\(x\)[()]+$",
        r"(?=a)a",
        r"(?!b)a",
        r"(?<=a)b",
        r"(?<!a)b",
        r"[]()]+",  # "]" first in a class is a literal
        r"[^]()]+",
        r"[\]()]",
        r"a+?b*?c??",  # lazy quantifiers
        r"a+b+",
        r"a{2}b+",
        r"a{2}?",
        r"a{x}+",  # not a counted repeat: literal text
        r"\++",
        r"[+]+",
        r"(?:ab)+",
        r"[a(b]",  # "(" anywhere in a class is a literal
        r"[a]b[c]+",
        r"^X+$",
    ],
)
def test_patterns_pubnub_accepts(pattern: str) -> None:
    assert pattern_problem(pattern) is None


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("(a)", NON_CAPTURING),
        ("^a(?P<name>b)$", NON_CAPTURING),
        ("[a](b)", NON_CAPTURING),
        ("[]](b)", NON_CAPTURING),
        ("[^]](b)", NON_CAPTURING),
        (r"\((b)", NON_CAPTURING),
        ("a++", "Syntax error: multiple repeat."),
        ("a*+", "Syntax error: multiple repeat."),
        ("a?+", "Syntax error: multiple repeat."),
        ("(?:ab)?+", "Syntax error: multiple repeat."),
        ("a{2}+", "Syntax error: multiple repeat."),
        ("a{2,}+", "Syntax error: multiple repeat."),
        ("a{2,5}+", "Syntax error: multiple repeat."),
        ("[a]{2}+", "Syntax error: multiple repeat."),
        ("[a", "Syntax error: unterminated character set."),
        ("a)", "Syntax error: unbalanced parenthesis."),
        ("*a", "Syntax error: nothing to repeat."),
        ("a\\", "Syntax error: bad escape (end of pattern)."),
        ("+a", "Syntax error: nothing to repeat."),
        (r"^\(?+$", "Syntax error: multiple repeat."),  # an escaped "(" opens no group: "?+" is possessive
        (r"[(]?+", "Syntax error: multiple repeat."),
    ],
)
def test_patterns_pubnub_refuses_with_its_reason(pattern: str, problem: str) -> None:
    assert pattern_problem(pattern) == problem


# -- verify_signature ---------------------------------------------------------------------------

PUB, SUB = "pub-c-unit", "sub-c-unit"
PATH = f"/v3/pam/{SUB}/grant"


def check_signature(
    query: dict[str, str], *, method: str = "POST", body: str = "{}", now: float = NOW
) -> bool:
    return verify_signature(
        secret_key=SECRET,
        publish_key=PUB,
        subscribe_key=SUB,
        method=method,
        raw_path=PATH,
        query=query,
        body=body,
        now=now,
    )


def v2_signed(params: dict[str, str], *, method: str = "POST", body: str = "{}") -> dict[str, str]:
    """``params`` signed as the SDKs sign (v2: method, publish key, path, sorted query, body)."""
    text = f"{method}\n{PUB}\n{PATH}\n{utils.prepare_pam_arguments(params)}\n{body}"
    return {**params, "signature": "v2." + utils.sign_sha256(SECRET, text).rstrip("=")}


def legacy_signed(params: dict[str, str]) -> dict[str, str]:
    """``params`` signed with the older scheme (subscribe key, publish key, path, sorted query)."""
    text = f"{SUB}\n{PUB}\n{PATH}\n{utils.prepare_pam_arguments(params)}"
    return {**params, "signature": utils.sign_sha256(SECRET, text)}


def skew_refusal() -> tuple[int, Any]:
    detail = {
        "message": "The timestamp must be within 60 seconds of the server's time.",
        "location": "timestamp",
        "locationType": "query",
    }
    return 403, {
        "status": 403,
        "service": "Access Manager",
        "error": {"message": "Signature Does Not Match", "source": "signature", "details": [detail]},
    }


# Values whose encoding the SDK signs: reserved characters, "~", spaces, non-ASCII, JSON.
AWKWARD = {"uuid": "dr ~smith/ü", "filter": "a=='b' && c!=\"d\"", "state": '{"x":[1,(2)]}*'}


def test_an_unsigned_request_is_not_signed() -> None:
    assert check_signature({"uuid": "pat1", "timestamp": str(int(NOW))}) is False


def test_requests_signed_as_the_sdk_signs_them_are_accepted() -> None:
    params = {**AWKWARD, "timestamp": str(int(NOW))}
    assert check_signature(v2_signed(params)) is True
    assert check_signature(v2_signed(params, method="POST"), method="post") is True
    assert check_signature(v2_signed(params, method="GET", body=""), method="GET", body="") is True
    assert check_signature(legacy_signed(params), body="ignored by the older scheme") is True


@pytest.mark.parametrize(
    "tamper",
    [
        lambda q: {**q, "uuid": "someone-else"},
        lambda q: {**q, "extra": "1"},
        lambda q: {**q, "signature": q["signature"] + "A"},
    ],
    ids=["changed-value", "added-parameter", "changed-signature"],
)
@pytest.mark.parametrize("sign", [v2_signed, legacy_signed], ids=["v2", "legacy"])
def test_a_request_changed_after_signing_is_refused(tamper: Any, sign: Any) -> None:
    query = tamper(sign({**AWKWARD, "timestamp": str(int(NOW))}))
    assert refusal(check_signature, query) == denied("Signature Does Not Match")


def test_a_v2_signature_covers_the_method_and_body() -> None:
    query = v2_signed({"timestamp": str(int(NOW))}, method="POST", body='{"ttl":15}')
    assert check_signature(query, body='{"ttl":15}') is True
    assert refusal(lambda: check_signature(query, body='{"ttl":16}')) == denied("Signature Does Not Match")
    assert refusal(lambda: check_signature(query, method="PUT", body='{"ttl":15}')) == denied(
        "Signature Does Not Match"
    )


def test_a_signature_without_a_timestamp_is_refused() -> None:
    assert refusal(check_signature, v2_signed({"uuid": "pat1"})) == denied("Signature Does Not Match")


@pytest.mark.parametrize("offset", [-60, 60])
def test_a_timestamp_within_60_seconds_is_accepted(offset: int) -> None:
    assert check_signature(v2_signed({"timestamp": str(1_700_000_000 + offset)}), now=1_700_000_000) is True


@pytest.mark.parametrize(
    ("timestamp", "now"),
    [
        (1_700_000_061, 1_700_000_000),
        (1_699_999_939, 1_700_000_000),
        (1_700_000_061, 1_700_000_000.5),
        ("soon", 0),
    ],
)
def test_a_timestamp_further_off_or_not_a_number_is_refused(timestamp: int | str, now: float) -> None:
    query = v2_signed({"timestamp": str(timestamp)})
    assert refusal(lambda: check_signature(query, now=now)) == skew_refusal()
