"""Secrets at load: the same key from every source, unsafe or unusable secret files refused."""

from __future__ import annotations

import json
import os
import re
import struct
import threading
from pathlib import Path
from typing import get_args

import pytest
from pydantic import SecretStr

from telehealth_client.agent import bus_config
from telehealth_client.config import SECRET_FIELDS, ConfigError, Settings, load_settings

KEY = "a-cipher-key-of-32-characters-ok"

# Every secret setting, spelled out here so that a secret dropped from the code's list fails.
ALL_SECRETS = (
    "publish_key",
    "subscribe_key",
    "secret_key",
    "cipher_key",
    "previous_cipher_keys",
    "device_credential",
    "previous_device_credentials",
    "api_token",
    "proxy_authorization",
)


def secret_file(path: Path, content: str | bytes, mode: int = 0o600) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode)
    return path


def problems_of(environ: dict[str, str], config: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ=environ)
    return caught.value.problems


def test_every_secret_str_setting_is_a_secret_and_the_list_is_complete() -> None:
    holds_secrets = {
        name
        for name, field in Settings.model_fields.items()
        if SecretStr in get_args(field.annotation) or field.annotation == list[SecretStr]
    }
    assert holds_secrets == set(ALL_SECRETS) == set(SECRET_FIELDS)


@pytest.mark.parametrize("name", ALL_SECRETS)
def test_every_secret_in_the_config_file_is_refused(tmp_path: Path, name: str) -> None:
    config = tmp_path / "agent.toml"
    value = '["an-old-cipher-key-0001"]' if name.startswith("previous_") else '"a-secret-value-0001"'
    config.write_text(f"{name} = {value}\n")
    assert problems_of({}, config) == [
        f"{name} (config file): secrets are not read from the config file; "
        f"use TELEHEALTH_{name.upper()}_FILE or the systemd credential '{name}'"
    ]


def test_the_same_secret_from_the_environment_and_from_a_file_is_the_same_key(tmp_path: Path) -> None:
    from_env = load_settings(environ={"TELEHEALTH_CIPHER_KEY": f"  {KEY} \t"})
    for content in (f"{KEY}\n", f"{KEY}\r\n", f" {KEY} "):
        path = secret_file(tmp_path / "key", content)
        from_file = load_settings(environ={"TELEHEALTH_CIPHER_KEY_FILE": str(path)})
        assert from_file.cipher_key == from_env.cipher_key
    assert from_env.cipher_key is not None and from_env.cipher_key.get_secret_value() == KEY

    keys = ["old-cipher-key-0001", "old-cipher-key-0002"]
    lines = secret_file(tmp_path / "old", "old-cipher-key-0001 \r\n old-cipher-key-0002\n")
    for environ in (
        {"TELEHEALTH_PREVIOUS_CIPHER_KEYS": " old-cipher-key-0001\nold-cipher-key-0002  \n"},
        {"TELEHEALTH_PREVIOUS_CIPHER_KEYS": '[" old-cipher-key-0001", "old-cipher-key-0002 "]'},
        {"TELEHEALTH_PREVIOUS_CIPHER_KEYS_FILE": str(lines)},
    ):
        settings = load_settings(environ=environ)
        assert [key.get_secret_value() for key in settings.previous_cipher_keys] == keys


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\xef\xbb\xbf" + KEY.encode(), "contains a byte order mark (BOM): save it as UTF-8 without one"),
        (KEY.encode() + b"\x00", "contains a NUL character"),
        (b"\xff\xfe" + KEY.encode(), "is not UTF-8 text"),
        (b"   \n\n", "must not be empty"),
        (KEY.encode() + b"\nsecond-line-of-key", "contains a line break or control character"),
        (b"short-key\n", "must be at least 16 characters (found 9)"),
    ],
)
def test_unusable_secret_files_are_refused_naming_the_variable(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = secret_file(tmp_path / "key", content)
    assert problems_of({"TELEHEALTH_CIPHER_KEY_FILE": str(path)}) == [
        f"cipher_key (TELEHEALTH_CIPHER_KEY_FILE={path}): {reason}"
    ]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("\ufeff" + KEY, "contains a byte order mark (BOM): save it as UTF-8 without one"),
        (KEY + "\x00", "contains a NUL character"),
        ("\udcff" + KEY, "is not UTF-8 text"),  # how os.environ holds a non-UTF-8 byte
        ("  ", "must not be empty"),
        ("short-key-15-ch", "must be at least 16 characters (found 15)"),
    ],
)
def test_unusable_secret_variables_are_refused_naming_the_variable(value: str, reason: str) -> None:
    assert problems_of({"TELEHEALTH_CIPHER_KEY": value}) == [f"cipher_key (TELEHEALTH_CIPHER_KEY): {reason}"]


def test_a_cipher_key_of_sixteen_characters_is_enough_and_other_secrets_may_be_shorter() -> None:
    settings = load_settings(
        environ={"TELEHEALTH_CIPHER_KEY": "k" * 16, "TELEHEALTH_SUBSCRIBE_KEY": "sub-c-1"}
    )
    assert settings.cipher_key is not None and settings.cipher_key.get_secret_value() == "k" * 16


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        (
            {"TELEHEALTH_PREVIOUS_CIPHER_KEYS": '["old-cipher-key-0001", " "]'},
            "previous_cipher_keys (TELEHEALTH_PREVIOUS_CIPHER_KEYS): item 2 must not be empty",
        ),
        (
            {"TELEHEALTH_PREVIOUS_CIPHER_KEYS": "old-cipher-key-0001\n \nold-cipher-key-0002"},
            "previous_cipher_keys (TELEHEALTH_PREVIOUS_CIPHER_KEYS): line 2 is blank",
        ),
        (
            {"TELEHEALTH_PREVIOUS_CIPHER_KEYS": '["old-cipher-key-0001", 7]'},
            "previous_cipher_keys (TELEHEALTH_PREVIOUS_CIPHER_KEYS): item 2 must be a string",
        ),
        (
            {"TELEHEALTH_PREVIOUS_CIPHER_KEYS": ""},
            "previous_cipher_keys (TELEHEALTH_PREVIOUS_CIPHER_KEYS): must not be empty (unset it for none)",
        ),
    ],
)
def test_a_blank_previous_key_is_an_error(environ: dict[str, str], problem: str) -> None:
    assert problems_of(environ) == [problem]


def test_an_empty_file_variable_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    credentials = tmp_path / "creds"
    credentials.mkdir()
    secret_file(credentials / "cipher_key", KEY)
    environ = {"CREDENTIALS_DIRECTORY": str(credentials), "TELEHEALTH_CIPHER_KEY_FILE": " "}
    assert problems_of(environ) == [
        "cipher_key (TELEHEALTH_CIPHER_KEY_FILE): is empty; give the secret file's path or unset it"
    ]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620, 0o602, 0o606])
def test_a_secret_file_other_users_can_read_or_write_is_refused_with_the_fix(
    tmp_path: Path, mode: int
) -> None:
    path = secret_file(tmp_path / "key", KEY, mode)
    access = {0o4: "read", 0o2: "written", 0o6: "read and written"}[(mode | mode >> 3) & 0o6]
    assert problems_of({"TELEHEALTH_CIPHER_KEY_FILE": str(path)}) == [
        f"cipher_key (TELEHEALTH_CIPHER_KEY_FILE={path}): {path} can be {access} by other users "
        f"(mode {mode:04o}); run: chmod 600 {path}"
    ]


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_an_owner_only_secret_file_is_read(tmp_path: Path, mode: int) -> None:
    path = secret_file(tmp_path / "key", KEY, mode)
    settings = load_settings(environ={"TELEHEALTH_CIPHER_KEY_FILE": str(path)})
    assert settings.cipher_key is not None and settings.cipher_key.get_secret_value() == KEY


# POSIX ACL in its extended-attribute form (linux/posix_acl_xattr.h).
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
NO_ID = 0xFFFFFFFF


def set_acl(path: Path, *entries: tuple[int, int, int]) -> None:
    os.setxattr(
        path,
        "system.posix_acl_access",
        struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries),
    )


def test_a_systemd_credential_shared_with_the_service_user_by_an_acl_is_read(tmp_path: Path) -> None:
    # What LoadCredential= leaves for a service with User=: owned by root, mode 0400, and an
    # ACL entry giving the service's user read access (the mode then shows 0440: the mask).
    credentials = tmp_path / "creds"
    credentials.mkdir()
    path = secret_file(credentials / "cipher_key", KEY, 0o400)
    os.chown(path, 4242, 4242)  # the owner is someone else; this process is the service's user
    set_acl(
        path,
        (USER_OBJ, 4, NO_ID),
        (USER, 4, os.geteuid()),
        (GROUP_OBJ, 0, NO_ID),
        (MASK, 4, NO_ID),
        (OTHER, 0, NO_ID),
    )
    assert path.stat().st_mode & 0o777 == 0o440
    settings = load_settings(environ={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert settings.cipher_key is not None and settings.cipher_key.get_secret_value() == KEY


@pytest.mark.parametrize(
    "grant",
    [(USER, 4, 4343), (GROUP, 4, 4343), (GROUP_OBJ, 4, NO_ID), (USER, 2, 4343)],
    ids=["another-user-reads", "a-group-reads", "the-owning-group-reads", "another-user-writes"],
)
def test_a_secret_file_an_acl_opens_to_others_is_refused(tmp_path: Path, grant: tuple[int, int, int]) -> None:
    path = secret_file(tmp_path / "key", KEY, 0o600)
    entries = [(USER_OBJ, 6, NO_ID), (GROUP_OBJ, 0, NO_ID), (MASK, 6, NO_ID), (OTHER, 0, NO_ID)]
    entries = [entry for entry in entries if entry[0] != grant[0]] + [grant]
    set_acl(path, *sorted(entries))
    problems = problems_of({"TELEHEALTH_CIPHER_KEY_FILE": str(path)})
    assert len(problems) == 1
    assert "by other users" in problems[0] and problems[0].endswith(f"run: chmod 600 {path}")


def load_in_a_thread(environ: dict[str, str], fifo: Path) -> list[str]:
    """Load with a deadline; a load that blocks on the FIFO is released and fails the test."""
    outcome: list[str] = []

    def load() -> None:
        try:
            load_settings(environ=environ)
            outcome.append("loaded")
        except ConfigError as exc:
            outcome.extend(exc.problems)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a reader waits: release it
        worker.join(timeout=30)
        pytest.fail("loading the settings blocked on a FIFO")
    return outcome


def test_a_fifo_is_refused_without_blocking_the_load(tmp_path: Path) -> None:
    fifo = tmp_path / "key"
    os.mkfifo(fifo, 0o600)
    assert load_in_a_thread({"TELEHEALTH_CIPHER_KEY_FILE": str(fifo)}, fifo) == [
        f"cipher_key (TELEHEALTH_CIPHER_KEY_FILE={fifo}): {fifo} is a FIFO, not a regular file"
    ]


def test_a_fifo_in_the_credentials_directory_is_refused_not_skipped(tmp_path: Path) -> None:
    fifo = tmp_path / "cipher_key"
    os.mkfifo(fifo, 0o600)
    assert load_in_a_thread({"CREDENTIALS_DIRECTORY": str(tmp_path)}, fifo) == [
        f"cipher_key (credential {fifo}): {fifo} is a FIFO, not a regular file"
    ]


def test_a_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    assert problems_of({"TELEHEALTH_API_TOKEN_FILE": str(folder)}) == [
        f"api_token (TELEHEALTH_API_TOKEN_FILE={folder}): {folder} is a directory, not a regular file"
    ]


def test_a_missing_secret_file_is_explained(tmp_path: Path) -> None:
    absent = tmp_path / "absent"
    assert problems_of({"TELEHEALTH_CIPHER_KEY_FILE": str(absent)}) == [
        f"cipher_key (TELEHEALTH_CIPHER_KEY_FILE={absent}): cannot read {absent}: No such file or directory"
    ]


def test_a_missing_secret_names_every_place_it_was_looked_for(tmp_path: Path) -> None:
    settings = load_settings(environ={"CREDENTIALS_DIRECTORY": str(tmp_path), "TELEHEALTH_CIPHER_KEY": KEY})
    with pytest.raises(
        ValueError,
        match=re.escape(
            "subscribe_key: not set; looked in TELEHEALTH_SUBSCRIBE_KEY, TELEHEALTH_SUBSCRIBE_KEY_FILE "
            f"and the systemd credential {tmp_path / 'subscribe_key'}"
        ),
    ):
        bus_config(settings)
    settings = load_settings(environ={"TELEHEALTH_SUBSCRIBE_KEY": "sub-c-1"})
    with pytest.raises(
        ValueError,
        match=re.escape(
            "cipher_key: not set; looked in TELEHEALTH_CIPHER_KEY, TELEHEALTH_CIPHER_KEY_FILE "
            "and the systemd credential 'cipher_key' ($CREDENTIALS_DIRECTORY is not set)"
        ),
    ):
        bus_config(settings)


def test_secrets_from_the_credentials_directory_and_file_variables(tmp_path: Path) -> None:
    credentials = tmp_path / "creds"
    credentials.mkdir()
    secret_file(credentials / "cipher_key", "systemd-cipher-key-01\n")
    secret_file(credentials / "previous_cipher_keys", "old-cipher-key-0001\nold-cipher-key-0002\n")
    api = secret_file(tmp_path / "api", "api-secret\n")
    settings = load_settings(
        environ={"CREDENTIALS_DIRECTORY": str(credentials), "TELEHEALTH_API_TOKEN_FILE": str(api)}
    )
    assert settings.cipher_key is not None
    assert settings.cipher_key.get_secret_value() == "systemd-cipher-key-01"
    assert [key.get_secret_value() for key in settings.previous_cipher_keys] == [
        "old-cipher-key-0001",
        "old-cipher-key-0002",
    ]
    assert settings.api_token is not None and settings.api_token.get_secret_value() == "api-secret"


def test_previous_device_credentials_are_read_like_previous_cipher_keys(tmp_path: Path) -> None:
    """Credentials rotated out still verify the audit records they signed: one a line, or JSON,
    from a variable, a file or the systemd credentials directory; a blank one is refused."""
    old = ["kiosk-1-credential-2025", "kiosk-1-credential-2026"]
    credentials = tmp_path / "creds"
    credentials.mkdir()
    secret_file(credentials / "previous_device_credentials", f"{old[0]}\n{old[1]}\n")
    lines = secret_file(tmp_path / "old", f" {old[0]} \r\n{old[1]}\n")
    for environ in (
        {"TELEHEALTH_PREVIOUS_DEVICE_CREDENTIALS": f"{old[0]}\n {old[1]} "},
        {"TELEHEALTH_PREVIOUS_DEVICE_CREDENTIALS": json.dumps(old)},
        {"TELEHEALTH_PREVIOUS_DEVICE_CREDENTIALS_FILE": str(lines)},
        {"CREDENTIALS_DIRECTORY": str(credentials)},
    ):
        settings = load_settings(environ=environ)
        assert [value.get_secret_value() for value in settings.previous_device_credentials] == old
    assert load_settings(environ={}).previous_device_credentials == []
    assert problems_of({"TELEHEALTH_PREVIOUS_DEVICE_CREDENTIALS": f"{old[0]}\n\n{old[1]}"}) == [
        "previous_device_credentials (TELEHEALTH_PREVIOUS_DEVICE_CREDENTIALS): line 2 is blank"
    ]


def test_a_secret_never_appears_in_a_refusal(tmp_path: Path) -> None:
    path = secret_file(tmp_path / "key", "MARKER-SECRET-VALUE-1234\n", 0o644)
    problems = problems_of({"TELEHEALTH_CIPHER_KEY_FILE": str(path), "TELEHEALTH_API_TOKEN": "MARKER\x00X"})
    assert len(problems) == 2
    assert "MARKER" not in "\n".join(problems)
