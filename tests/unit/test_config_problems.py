"""Settings: the exact problem each bad value gets, what each source hands on, and the printable
form. Pins the rules a mutation run showed no test held (see scripts/mutation.sh)."""

from __future__ import annotations

import os
import socket
import stat
import struct
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from devices.thresholds import DeviceThresholds
from telehealth_client.config import (
    MAX_SECRET_FILE_BYTES,
    ConfigError,
    MissingSecretError,
    Role,
    Settings,
    clean_secret,
    clean_secret_lines,
    clean_secret_list,
    load_settings,
    parse_acl,
    read_secret_file,
)

KEY = "a-cipher-key-of-32-characters-ok"
OLD = "old-cipher-key-0001"


def problems_of(environ: dict[str, str], config: Path | None = None, **overrides: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ=environ, **overrides)
    return caught.value.problems


def secret_file(path: Path, content: str | bytes, mode: int = 0o600) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode)
    return path


def reason(call: Any, *args: Any) -> str:
    with pytest.raises(ValueError) as caught:
        call(*args)
    return str(caught.value)


# -- the secret cleaners ------------------------------------------------------------------------


def test_a_secret_is_trimmed_and_a_cipher_key_needs_16_characters() -> None:
    assert clean_secret("cipher_key", f" \t{KEY}\r\n") == KEY
    assert clean_secret("cipher_key", "k" * 16) == "k" * 16
    assert (
        reason(clean_secret, "cipher_key", " " + "k" * 15 + " ")
        == "must be at least 16 characters (found 15)"
    )
    assert clean_secret("api_token", "t") == "t"  # only the cipher key has a length rule


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("\ufeff" + KEY, "contains a byte order mark (BOM): save it as UTF-8 without one"),
        (KEY + "\x00", "contains a NUL character"),
        (KEY + "\udcff", "is not UTF-8 text"),
        (" \n\t ", "must not be empty"),
        (KEY + "\x07", "contains a line break or control character"),
        (f"{KEY}\n{KEY}", "contains a line break or control character"),
    ],
)
def test_an_unusable_secret_is_refused_with_its_reason(text: str, problem: str) -> None:
    assert reason(clean_secret, "cipher_key", text) == problem


def test_secret_lines_are_each_trimmed_and_judged_with_their_line_number() -> None:
    assert clean_secret_lines("previous_cipher_keys", f"\n {OLD} \r\nold-cipher-key-0002\n\n") == [
        OLD,
        "old-cipher-key-0002",
    ]
    assert reason(clean_secret_lines, "cipher_key", f"{KEY}\nshort") == (
        "line 2 must be at least 16 characters (found 5)"
    )
    assert reason(clean_secret_lines, "previous_cipher_keys", f"{OLD}\n\t\n{OLD}") == "line 2 is blank"
    assert reason(clean_secret_lines, "previous_cipher_keys", f"{OLD}\n{OLD}\x07") == (
        "line 2 contains a line break or control character"
    )
    assert (
        reason(clean_secret_lines, "previous_cipher_keys", "\n \n") == "must not be empty (unset it for none)"
    )
    assert reason(clean_secret_lines, "previous_cipher_keys", f"\ufeff{OLD}") == (
        "contains a byte order mark (BOM): save it as UTF-8 without one"
    )


def test_a_secret_list_judges_each_item_with_its_number() -> None:
    assert clean_secret_list("previous_cipher_keys", [f" {OLD}", "old-cipher-key-0002\n"]) == [
        OLD,
        "old-cipher-key-0002",
    ]
    assert clean_secret_list("previous_cipher_keys", []) == []
    assert reason(clean_secret_list, "previous_cipher_keys", [OLD, None]) == "item 2 must be a string"
    assert reason(clean_secret_list, "cipher_key", [KEY, KEY, "short"]) == (
        "item 3 must be at least 16 characters (found 5)"
    )
    assert (
        reason(clean_secret_list, "previous_cipher_keys", [f"{OLD}\x00"]) == "item 1 contains a NUL character"
    )


# -- values given in code (keyword overrides and Settings itself) ---------------------------------


def test_secrets_given_in_code_are_cleaned_like_any_other() -> None:
    settings = load_settings(
        environ={},
        cipher_key=SecretStr(f"  {KEY}\n"),
        api_token=" token ",
        previous_cipher_keys=[SecretStr(f" {OLD} "), "old-cipher-key-0002"],
    )
    assert settings.cipher_key is not None and settings.cipher_key.get_secret_value() == KEY
    assert settings.api_token is not None and settings.api_token.get_secret_value() == "token"
    assert [key.get_secret_value() for key in settings.previous_cipher_keys] == [OLD, "old-cipher-key-0002"]
    lines = load_settings(environ={}, previous_cipher_keys=f"{OLD}\n old-cipher-key-0002 ")
    assert [key.get_secret_value() for key in lines.previous_cipher_keys] == [OLD, "old-cipher-key-0002"]


def test_unusable_secrets_given_in_code_are_refused_naming_the_setting() -> None:
    assert problems_of({}, cipher_key=SecretStr("short"), api_token="  ") == [
        "cipher_key (TELEHEALTH_CIPHER_KEY): must be at least 16 characters (found 5)",
        "api_token (TELEHEALTH_API_TOKEN): must not be empty",
    ]
    assert problems_of({}, previous_cipher_keys=[OLD, SecretStr(" ")]) == [
        "previous_cipher_keys (TELEHEALTH_PREVIOUS_CIPHER_KEYS): item 2 must not be empty"
    ]
    assert problems_of({}, previous_cipher_keys=f"{OLD}\n\n{OLD}") == [
        "previous_cipher_keys (TELEHEALTH_PREVIOUS_CIPHER_KEYS): line 2 is blank"
    ]


def test_settings_built_directly_report_a_bad_variable_as_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Outside load_settings a source has nowhere to collect problems: it raises them at once.
    monkeypatch.setenv("TELEHEALTH_CIPHER_KEY", "short")
    with pytest.raises(ConfigError) as caught:
        Settings()
    assert caught.value.problems == [
        "cipher_key (TELEHEALTH_CIPHER_KEY): must be at least 16 characters (found 5)"
    ]
    monkeypatch.setenv("TELEHEALTH_CIPHER_KEY", KEY)
    monkeypatch.setenv("TELEHEALTH_API_TOKEN_FILE", "")
    with pytest.raises(ConfigError) as caught:
        Settings()
    assert caught.value.problems == [
        "api_token (TELEHEALTH_API_TOKEN_FILE): is empty; give the secret file's path or unset it"
    ]


def test_a_config_error_reads_as_one_problem_per_line() -> None:
    error = ConfigError(["first: bad", "second: worse"])
    assert str(error) == "first: bad\nsecond: worse"
    assert error.problems == ["first: bad", "second: worse"]


# -- each validator's exact refusal and what it keeps ----------------------------------------------


@pytest.mark.parametrize("origin", ["", "relay/x", "relay x", "relay?x", "relay#x", "user@relay"])
def test_an_origin_with_a_scheme_path_or_credentials_is_refused(origin: str) -> None:
    assert problems_of({"TELEHEALTH_ORIGIN": origin}) == [
        "origin (TELEHEALTH_ORIGIN): must be host or host:port, without scheme or path"
    ]


@pytest.mark.parametrize(
    ("origin", "problem"),
    [
        ("[::1]:0", "port must be a number from 1 to 65535 (found '0')"),
        ("[::1]:", "port must be a number from 1 to 65535 (found '')"),
        ("[::1]:99999", "port must be a number from 1 to 65535 (found '99999')"),
        ("[]:8080", "has no host"),
        ("[::1]]:8080", "must be host or host:port, without scheme or path"),
        ("fe80::1", "an IPv6 address must be in brackets: [address]:port"),
    ],
)
def test_a_bracketed_or_bare_ipv6_origin_is_judged_whole(origin: str, problem: str) -> None:
    assert problems_of({"TELEHEALTH_ORIGIN": origin}) == [f"origin (TELEHEALTH_ORIGIN): {problem}"]


def test_the_clinic_url_must_be_http_and_loses_its_trailing_slash() -> None:
    assert load_settings(environ={"TELEHEALTH_CLINIC_URL": "https://clinic.example/api/"}).clinic_url == (
        "https://clinic.example/api"
    )
    assert (
        load_settings(environ={"TELEHEALTH_CLINIC_URL": "http://127.0.0.1:9"}).clinic_url
        == "http://127.0.0.1:9"
    )
    assert problems_of({"TELEHEALTH_CLINIC_URL": "clinic.example"}) == [
        "clinic_url (TELEHEALTH_CLINIC_URL): must start with http:// or https://"
    ]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_the_api_may_listen_on_each_loopback_name(host: str) -> None:
    assert load_settings(environ={"TELEHEALTH_API_HOST": host}).api_host == host


def test_the_api_may_not_listen_beyond_loopback() -> None:
    assert problems_of({"TELEHEALTH_API_HOST": "127.0.0.2"}) == [
        "api_host (TELEHEALTH_API_HOST): must be a loopback address (127.0.0.1, ::1 or localhost)"
    ]


@pytest.mark.parametrize("level", ["debug", "Info", "WARNING", "error"])
def test_log_levels_are_read_in_any_case(level: str) -> None:
    assert load_settings(environ={"TELEHEALTH_LOG_LEVEL": level}).log_level == level.upper()


def test_unknown_log_levels_and_formats_are_refused() -> None:
    assert problems_of({"TELEHEALTH_LOG_LEVEL": "TRACE", "TELEHEALTH_LOG_FORMAT": "JSON"}) == [
        "log_level (TELEHEALTH_LOG_LEVEL): must be DEBUG, INFO, WARNING or ERROR",
        "log_format (TELEHEALTH_LOG_FORMAT): must be 'kv' or 'json'",
    ]
    assert load_settings(environ={"TELEHEALTH_LOG_FORMAT": "json"}).log_format == "json"


def test_device_names_are_checked_naming_the_setting() -> None:
    assert problems_of(
        {"TELEHEALTH_CAMERA": " ", "TELEHEALTH_MICROPHONE": "-1", "TELEHEALTH_SPEAKER": "a\x00"}
    ) == [
        "camera (TELEHEALTH_CAMERA): must not be empty",
        "microphone (TELEHEALTH_MICROPHONE): index must be a non-negative integer, got '-1'",
        "speaker (TELEHEALTH_SPEAKER): contains a NUL character",
    ]
    settings = load_settings(
        environ={"TELEHEALTH_CAMERA": "2", "TELEHEALTH_MICROPHONE": "USB", "TELEHEALTH_SPEAKER": "3"}
    )
    assert (settings.camera, settings.microphone, settings.speaker) == ("2", "USB", "3")


def test_the_reconnect_back_off_may_be_flat_but_not_shrink() -> None:
    flat = load_settings(
        environ={"TELEHEALTH_RECONNECT_MIN_SECONDS": "2", "TELEHEALTH_RECONNECT_MAX_SECONDS": "2"}
    )
    assert (flat.reconnect_min_seconds, flat.reconnect_max_seconds) == (2.0, 2.0)
    assert problems_of(
        {"TELEHEALTH_RECONNECT_MIN_SECONDS": "2", "TELEHEALTH_RECONNECT_MAX_SECONDS": "1.5"}
    ) == ["settings: reconnect_max_seconds must not be below reconnect_min_seconds"]


def test_pydantics_own_refusals_name_the_setting_its_variable_and_the_nested_field() -> None:
    assert problems_of(
        {"TELEHEALTH_API_PORT": "-1", "TELEHEALTH_DEVICE_THRESHOLDS": '{"camera": {"frames": "many"}}'}
    ) == [
        "device_thresholds.camera.frames (TELEHEALTH_DEVICE_THRESHOLDS): "
        "Input should be a valid integer, unable to parse string as an integer",
        "api_port (TELEHEALTH_API_PORT): Input should be greater than or equal to 0",
    ]


def test_an_unknown_keyword_is_named_without_a_variable() -> None:
    assert problems_of({}, bogus=1) == ["bogus: Extra inputs are not permitted"]


# -- the environment source -----------------------------------------------------------------------


def test_previous_keys_in_a_variable_are_json_when_they_start_with_a_bracket() -> None:
    spaced = load_settings(environ={"TELEHEALTH_PREVIOUS_CIPHER_KEYS": f' \n ["{OLD}"]'})
    assert [key.get_secret_value() for key in spaced.previous_cipher_keys] == [OLD]
    assert problems_of({"TELEHEALTH_PREVIOUS_CIPHER_KEYS": f'["{OLD}",'}) == [
        "previous_cipher_keys (TELEHEALTH_PREVIOUS_CIPHER_KEYS): not valid JSON: Expecting value"
    ]
    # Other variables are never read as JSON lists, whatever they start with.
    bracketed = load_settings(environ={"TELEHEALTH_API_TOKEN": "[token]", "TELEHEALTH_MICROPHONE": "[USB]"})
    assert bracketed.api_token is not None and bracketed.api_token.get_secret_value() == "[token]"
    assert bracketed.microphone == "[USB]"


def test_every_secret_variable_is_trimmed() -> None:
    environ = {
        "TELEHEALTH_PUBLISH_KEY": " pub-c-1 ",
        "TELEHEALTH_SUBSCRIBE_KEY": " sub-c-1\n",
        "TELEHEALTH_SECRET_KEY": "\tsec-c-1",
        "TELEHEALTH_DEVICE_CREDENTIAL": "cred-1 ",
    }
    settings = load_settings(environ=environ)
    for name, value in (
        ("publish_key", "pub-c-1"),
        ("subscribe_key", "sub-c-1"),
        ("secret_key", "sec-c-1"),
        ("device_credential", "cred-1"),
    ):
        assert settings.require_secret(name).get_secret_value() == value


def test_a_variable_that_is_not_a_secret_is_handed_on_as_typed() -> None:
    assert load_settings(environ={"TELEHEALTH_USER_ID": "kiosk-7"}).user_id == "kiosk-7"
    assert problems_of({"TELEHEALTH_USER_ID": " kiosk-7"})[0].startswith("user_id (TELEHEALTH_USER_ID): ")


def test_every_problem_of_one_load_is_reported_in_order() -> None:
    # Unknown variables first, then what the sources could not read, then invalid values.
    assert problems_of(
        {
            "TELEHEALTH_ROLEE": "nurse",
            "TELEHEALTH_CIPHER_KEY": "short",
            "TELEHEALTH_API_TOKEN_FILE": "",
            "TELEHEALTH_LOG_FORMAT": "xml",
        }
    ) == [
        "TELEHEALTH_ROLEE: unknown setting; did you mean TELEHEALTH_ROLE?",
        "cipher_key (TELEHEALTH_CIPHER_KEY): must be at least 16 characters (found 5)",
        "api_token (TELEHEALTH_API_TOKEN_FILE): is empty; give the secret file's path or unset it",
        "log_format (TELEHEALTH_LOG_FORMAT): must be 'kv' or 'json'",
    ]


@pytest.mark.parametrize(
    "name", ["TELEHEALTH_CONFIG", "TELEHEALTH_SECRET_KEY_FILE", "TELEHEALTH_API_TOKEN_FILE"]
)
def test_the_config_and_secret_file_variables_are_known(name: str, tmp_path: Path) -> None:
    target = secret_file(tmp_path / "file", KEY) if name.endswith("_FILE") else tmp_path / "agent.toml"
    if not name.endswith("_FILE"):
        target.write_text("")
    load_settings(environ={name: str(target)})


def test_a_file_variable_for_a_setting_that_is_not_a_secret_is_unknown() -> None:
    assert problems_of({"TELEHEALTH_ROLE_FILE": "/etc/role"}) == [
        "TELEHEALTH_ROLE_FILE: unknown setting; did you mean TELEHEALTH_ROLE?"
    ]


def test_the_process_environment_is_read_when_none_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEHEALTH_DEPARTMENT_ID", "cardiology")
    assert load_settings().department_id == "cardiology"
    assert load_settings(environ={}).department_id == "dept-unconfigured"


def test_a_load_leaves_nothing_behind_for_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('department_id = "oncology"\n')
    assert load_settings(config, environ={"TELEHEALTH_USER_ID": "kiosk-9"}).department_id == "oncology"
    monkeypatch.delenv("TELEHEALTH_USER_ID", raising=False)
    monkeypatch.delenv("TELEHEALTH_DEPARTMENT_ID", raising=False)
    monkeypatch.delenv("TELEHEALTH_CONFIG", raising=False)
    direct = Settings()
    assert (direct.user_id, direct.department_id) == ("kiosk-unconfigured", "dept-unconfigured")


def test_an_explicit_config_file_wins_over_the_variable(tmp_path: Path) -> None:
    chosen, other = tmp_path / "chosen.toml", tmp_path / "other.toml"
    chosen.write_text('department_id = "chosen"\n')
    other.write_text('department_id = "other"\n')
    assert load_settings(chosen, environ={"TELEHEALTH_CONFIG": str(other)}).department_id == "chosen"
    assert load_settings(chosen, environ={"TELEHEALTH_CONFIG": ""}).department_id == "chosen"


# -- the secret file source ------------------------------------------------------------------------


def test_an_explicit_secret_file_wins_over_the_credentials_directory(tmp_path: Path) -> None:
    credentials = tmp_path / "creds"
    credentials.mkdir()
    secret_file(credentials / "cipher_key", "credential-cipher-key-1")
    explicit = secret_file(tmp_path / "key", KEY)
    settings = load_settings(
        environ={"CREDENTIALS_DIRECTORY": str(credentials), "TELEHEALTH_CIPHER_KEY_FILE": str(explicit)}
    )
    assert settings.require_secret("cipher_key").get_secret_value() == KEY


SECRET_SETTINGS = (
    "publish_key",
    "subscribe_key",
    "secret_key",
    "cipher_key",
    "device_credential",
    "api_token",
)


def test_every_secret_is_read_from_the_credentials_directory(tmp_path: Path) -> None:
    for name in SECRET_SETTINGS:
        secret_file(tmp_path / name, f" {name}-value-0001 \n")
    secret_file(tmp_path / "previous_cipher_keys", f"{OLD}\n old-cipher-key-0002\n")
    settings = load_settings(environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    for name in SECRET_SETTINGS:
        assert settings.require_secret(name).get_secret_value() == f"{name}-value-0001"
    assert [key.get_secret_value() for key in settings.previous_cipher_keys] == [OLD, "old-cipher-key-0002"]


def test_problems_with_several_secret_files_are_all_reported(tmp_path: Path) -> None:
    short = secret_file(tmp_path / "short", "short")
    blank = secret_file(tmp_path / "blank", f"{OLD}\n\n{OLD}\n")
    assert problems_of(
        {"TELEHEALTH_CIPHER_KEY_FILE": str(short), "TELEHEALTH_PREVIOUS_CIPHER_KEYS_FILE": str(blank)}
    ) == [
        f"cipher_key (TELEHEALTH_CIPHER_KEY_FILE={short}): must be at least 16 characters (found 5)",
        f"previous_cipher_keys (TELEHEALTH_PREVIOUS_CIPHER_KEYS_FILE={blank}): line 2 is blank",
    ]


def test_an_empty_file_variable_does_not_stop_the_other_secrets_being_read(tmp_path: Path) -> None:
    absent = tmp_path / "absent"
    assert problems_of({"TELEHEALTH_PUBLISH_KEY_FILE": "", "TELEHEALTH_API_TOKEN_FILE": str(absent)}) == [
        "publish_key (TELEHEALTH_PUBLISH_KEY_FILE): is empty; give the secret file's path or unset it",
        f"api_token (TELEHEALTH_API_TOKEN_FILE={absent}): cannot read {absent}: No such file or directory",
    ]


def test_a_dangling_link_in_the_credentials_directory_is_refused_not_skipped(tmp_path: Path) -> None:
    (tmp_path / "api_token").symlink_to(tmp_path / "gone")
    assert problems_of({"CREDENTIALS_DIRECTORY": str(tmp_path)}) == [
        f"api_token (credential {tmp_path / 'api_token'}): cannot read {tmp_path / 'api_token'}: "
        "No such file or directory"
    ]


def test_an_empty_credentials_directory_variable_reads_no_credentials(tmp_path: Path) -> None:
    (Path.cwd() / "cipher_key").exists() and pytest.skip("a cipher_key file in the working directory")
    settings = load_settings(environ={"CREDENTIALS_DIRECTORY": ""})
    assert settings.cipher_key is None
    with pytest.raises(MissingSecretError, match=r"\(\$CREDENTIALS_DIRECTORY is not set\)"):
        settings.require_secret("cipher_key")


# -- read_secret_file ------------------------------------------------------------------------------


def test_a_secret_file_of_exactly_64_kib_is_read_and_a_larger_one_refused(tmp_path: Path) -> None:
    fits = secret_file(tmp_path / "fits", "k" * MAX_SECRET_FILE_BYTES)
    assert read_secret_file(fits) == "k" * MAX_SECRET_FILE_BYTES
    big = secret_file(tmp_path / "big", "k" * (MAX_SECRET_FILE_BYTES + 1))
    assert reason(read_secret_file, big) == f"{big} is larger than 64 KiB: not a secret file"


def test_a_secret_file_is_read_as_it_is(tmp_path: Path) -> None:
    path = secret_file(tmp_path / "key", f" {KEY}\nüñí\n".encode())
    assert read_secret_file(path) == f" {KEY}\nüñí\n"


def test_a_secret_path_through_a_file_is_explained(tmp_path: Path) -> None:
    path = secret_file(tmp_path / "key", KEY) / "inside"
    assert reason(read_secret_file, path) == f"cannot read {path}: Not a directory"


def test_a_character_device_and_a_socket_are_refused(tmp_path: Path) -> None:
    assert (
        reason(read_secret_file, Path("/dev/null")) == "/dev/null is a character device, not a regular file"
    )
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        path.chmod(0o600)
        assert reason(read_secret_file, path) == f"{path} is a socket, not a regular file"


def test_a_block_device_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "disk"
    try:
        os.mknod(path, 0o600 | stat.S_IFBLK, os.makedev(7, 250))
    except PermissionError:
        pytest.skip("this machine may not create device nodes")
    assert reason(read_secret_file, path) == f"{path} is a block device, not a regular file"


@pytest.mark.parametrize(
    ("mode", "access"), [(0o604, "read"), (0o602, "written"), (0o666, "read and written")]
)
def test_exposure_through_the_mode_names_what_others_can_do(tmp_path: Path, mode: int, access: str) -> None:
    path = secret_file(tmp_path / "key", KEY, mode)
    assert reason(read_secret_file, path) == (
        f"{path} can be {access} by other users (mode {mode:04o}); run: chmod 600 {path}"
    )


def test_the_owner_may_execute_and_others_may_traverse(tmp_path: Path) -> None:
    # Only read and write bits expose a secret: execute bits are not a leak.
    path = secret_file(tmp_path / "key", KEY, 0o711)
    assert read_secret_file(path) == KEY


# POSIX ACL in its extended-attribute form (linux/posix_acl_xattr.h).
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
NO_ID = 0xFFFFFFFF


def acl_bytes(*entries: tuple[int, int, int], version: int = 2) -> bytes:
    return struct.pack("<I", version) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


def test_an_acl_attribute_is_read_entry_by_entry() -> None:
    entries = [(USER_OBJ, 6, NO_ID), (USER, 4, 3_000_000_000), (GROUP_OBJ, 0, NO_ID), (MASK, 4, NO_ID)]
    assert parse_acl(Path("key"), acl_bytes(*entries)) == entries
    assert parse_acl(Path("key"), acl_bytes()) == []


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x02\x00\x00",  # shorter than its header
        acl_bytes((USER_OBJ, 6, NO_ID))[:-1],  # a cut entry
        acl_bytes((USER_OBJ, 6, NO_ID)) + b"\x00",
        acl_bytes((USER_OBJ, 6, NO_ID), version=1),
        acl_bytes((USER_OBJ, 6, NO_ID), version=3),
    ],
    ids=["empty", "short-header", "cut-entry", "extra-byte", "version-1", "version-3"],
)
def test_an_acl_attribute_of_an_unknown_layout_is_refused(raw: bytes) -> None:
    assert reason(parse_acl, Path("/run/credentials/key"), raw) == (
        "/run/credentials/key has an access control list this agent cannot read"
    )


def test_a_group_whose_read_the_acl_mask_switches_off_cannot_read(tmp_path: Path) -> None:
    # setfacl -m g:4343:r,m::- : the named group's entry stays, but the mask grants it nothing.
    path = secret_file(tmp_path / "key", KEY, 0o600)
    entries = [
        (USER_OBJ, 6, NO_ID),
        (GROUP_OBJ, 0, NO_ID),
        (GROUP, 4, 4343),
        (MASK, 0, NO_ID),
        (OTHER, 0, NO_ID),
    ]
    os.setxattr(path, "system.posix_acl_access", acl_bytes(*entries))
    assert read_secret_file(path) == KEY


# -- the TOML source -------------------------------------------------------------------------------


def test_a_missing_config_file_names_the_file_and_the_reason(tmp_path: Path) -> None:
    absent = tmp_path / "absent.toml"
    assert problems_of({}, absent) == [f"config file {absent}: cannot read: No such file or directory"]
    assert problems_of({}, tmp_path) == [f"config file {tmp_path}: cannot read: Is a directory"]


def test_invalid_toml_names_the_file_and_where(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("user_id = \n")
    assert problems_of({}, config) == [
        f"config file {config}: not valid TOML: Invalid value (at line 1, column 11)"
    ]


def test_secrets_and_unknown_keys_in_one_file_are_reported_together(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('api_token = "t"\nzzzzzzzz = 1\nlog_levl = "INFO"\n')
    assert problems_of({}, config) == [
        "api_token (config file): secrets are not read from the config file; "
        "use TELEHEALTH_API_TOKEN_FILE or the systemd credential 'api_token'",
        "zzzzzzzz (config file): unknown setting",
        "log_levl (config file): unknown setting; did you mean log_level?",
    ]


def test_a_config_file_problem_comes_after_unknown_variables(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("nonsense = 1\n")
    assert problems_of({"TELEHEALTH_ZZZZZZZZZZZZ": "1"}, config) == [
        "TELEHEALTH_ZZZZZZZZZZZZ: unknown setting",
        "nonsense (config file): unknown setting",
    ]


# -- require_secret and redacted -------------------------------------------------------------------


def test_a_missing_secret_names_the_credentials_directory_it_was_looked_in(tmp_path: Path) -> None:
    settings = load_settings(environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    with pytest.raises(MissingSecretError) as caught:
        settings.require_secret("api_token")
    assert str(caught.value) == (
        "api_token: not set; looked in TELEHEALTH_API_TOKEN, TELEHEALTH_API_TOKEN_FILE "
        f"and the systemd credential {tmp_path / 'api_token'}"
    )


def test_redacted_shows_every_setting_printable_and_no_secret(tmp_path: Path) -> None:
    settings = load_settings(
        environ={
            "TELEHEALTH_ROLE": "nurse",
            "TELEHEALTH_CIPHER_KEY": KEY,
            "TELEHEALTH_PREVIOUS_CIPHER_KEYS": OLD,
            "TELEHEALTH_API_SOCKET": str(tmp_path / "api.sock"),
            "TELEHEALTH_STATE_DIR": str(tmp_path),
            "TELEHEALTH_MICROPHONE": "USB",
        }
    )
    data = settings.redacted()
    assert data == {
        "role": "nurse",
        "user_id": "kiosk-unconfigured",
        "organization_id": "org-unconfigured",
        "department_id": "dept-unconfigured",
        "origin": "ps.pndsn.com",
        "ssl": True,
        "publish_key": "<unset>",
        "subscribe_key": "<unset>",
        "secret_key": "<unset>",
        "cipher_key": "<set>",
        "previous_cipher_keys": "<set>",
        "presence_timeout_seconds": 120,
        "reconnect_min_seconds": 0.5,
        "reconnect_max_seconds": 5.0,
        "request_timeout_seconds": 10.0,
        "clinic_url": "http://127.0.0.1:8480",
        "device_credential": "<unset>",
        "previous_device_credentials": "<unset>",
        "https_proxy": None,
        "proxy_authorization": "<unset>",
        "no_proxy": [],
        "ca_bundle": None,
        "camera": None,
        "microphone": "USB",
        "speaker": None,
        "device_thresholds": DeviceThresholds().model_dump(),
        "media": True,
        "relay_only": True,
        "media_memory_ceiling_mb": 600,
        "wildcard_subscribe": True,
        "preflight_good_jitter_ms": 30.0,
        "preflight_good_loss_percent": 1.0,
        "preflight_poor_loss_percent": 5.0,
        "preflight_poor_rtt_ms": 300.0,
        "preflight_media_seconds": 4.0,
        "api_enabled": True,
        "api_host": "127.0.0.1",
        "api_port": 8470,
        "api_socket": str(tmp_path / "api.sock"),
        "api_token": "<unset>",
        "state_dir": str(tmp_path),
        "retention_days": 30,
        "undelivered_limit_mb": 64,
        "log_level": "INFO",
        "log_format": "kv",
    }
    assert type(data["role"]) is str and type(data["state_dir"]) is str
    assert settings.role is Role.NURSE


@pytest.mark.parametrize("value", ["99", "16385", "a lot"])
def test_a_media_memory_ceiling_out_of_range_is_refused_naming_it(value: str) -> None:
    with pytest.raises(ConfigError, match="media_memory_ceiling_mb"):
        load_settings(environ={"TELEHEALTH_MEDIA_MEMORY_CEILING_MB": value})
