"""The README's "Rotating secrets", run as written on an installed kiosk: each block in bash, the
secrets typed at its prompts, on this machine overlaid (``OverlaidSystem``: nothing of it changes;
``systemctl`` is the stand-in that records calls). After each block the credential files are what
the agent then reads (loaded by ``load_settings`` as systemd hands them over), the file every
drop-in loads exists, the drop-ins pass ``systemd-analyze verify`` beside kiosk.service, and the
block ended by restarting the service (a rotation takes effect at start)."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from telehealth_client.config import LIST_SECRET_FIELDS, Settings, load_settings
from tests.support.service import CREDENTIALS, REPO, SETTINGS, OverlaidSystem, unit_root, verify

pytestmark = pytest.mark.integration

README = REPO / "README.md"
BLOCK = re.compile(r"<!-- rotation: ([a-z-]+) -->\n\s*```sh\n(.*?)\n\s*```", re.DOTALL)
DROP_INS = "/etc/systemd/system/kiosk.service.d"
RESTART = "restart kiosk.service"
OLD_KEY, NEW_KEY = "old-cipher-key-of-the-org", "new-cipher-key-of-the-org"
OLD_CREDENTIAL, NEW_CREDENTIAL, NEWER_CREDENTIAL = "device-cred-1", "device-cred-2", "device-cred-3"
# What the operator filled in after the install (the placeholders the agent refuses, replaced).
FILLED_IN = {
    "publish_key": "pub-c-filled-in",
    "subscribe_key": "sub-c-filled-in",
    "cipher_key": OLD_KEY,
    "device_credential": OLD_CREDENTIAL,
}


def readme_blocks() -> dict[str, str]:
    blocks = {name: textwrap.dedent(body) + "\n" for name, body in BLOCK.findall(README.read_text())}
    assert set(blocks) == {
        "cipher-key-accept",
        "cipher-key-switch",
        "cipher-key-drop",
        "device-credential",
        "api-token",
    }
    return blocks


@dataclass(frozen=True)
class After:
    """What one block left: its output, systemctl's calls, the settings the agent then loads, the
    drop-ins (name: text) and the credential files (name: mode)."""

    output: str
    calls: list[str]
    settings: Settings
    drop_ins: dict[str, str]
    modes: dict[str, int]


class Kiosk:
    def __init__(self, system: OverlaidSystem) -> None:
        self.system = system
        self.credentials = system.changed(f"/{CREDENTIALS}")

    def run(self, script: str, typed: str = "") -> After:
        before = len(self.system.calls)
        result = self.system.run("bash", "-euo", "pipefail", "-c", script, stdin=typed)
        assert result.returncode == 0, result.stdout + result.stderr
        settings = load_settings(
            self.system.changed(f"/{SETTINGS}"), environ={"CREDENTIALS_DIRECTORY": str(self.credentials)}
        )
        drop_ins = self.system.changed(DROP_INS)
        return After(
            result.stdout + result.stderr,
            self.system.calls[before:],
            settings,
            {path.name: path.read_text() for path in sorted(drop_ins.glob("*.conf"))},
            {path.name: path.stat().st_mode & 0o777 for path in self.credentials.iterdir()},
        )


@dataclass(frozen=True)
class Rotations:
    token_before: str
    accepted: After
    switched: After
    device_rotated: After
    device_rotated_again: After
    dropped: After
    token_rotated: After


@pytest.fixture(scope="module")
def rotations(tmp_path_factory: pytest.TempPathFactory, product_wheel: Path) -> Rotations:
    system = OverlaidSystem(tmp_path_factory.mktemp("kiosk"))
    installed = system.run_installer(wheel=product_wheel)
    assert installed.returncode == 0, installed.stderr
    kiosk = Kiosk(system)
    for name, value in FILLED_IN.items():
        (kiosk.credentials / name).write_text(value + "\n")  # the file keeps its 0600
    token_before = (kiosk.credentials / "api_token").read_text()
    blocks = readme_blocks()
    return Rotations(
        token_before,
        accepted=kiosk.run(blocks["cipher-key-accept"], NEW_KEY + "\n"),
        switched=kiosk.run(blocks["cipher-key-switch"]),
        device_rotated=kiosk.run(blocks["device-credential"], NEW_CREDENTIAL + "\n"),
        device_rotated_again=kiosk.run(blocks["device-credential"], NEWER_CREDENTIAL + "\n"),
        dropped=kiosk.run(blocks["cipher-key-drop"]),
        token_rotated=kiosk.run(blocks["api-token"]),
    )


def secret(settings: Settings, name: str) -> str | list[str] | None:
    value = getattr(settings, name)
    if isinstance(value, list):
        return [item.get_secret_value() for item in value]
    return None if value is None else str(value.get_secret_value())


def every_step(rotations: Rotations) -> list[After]:
    return [
        rotations.accepted,
        rotations.switched,
        rotations.device_rotated,
        rotations.device_rotated_again,
        rotations.dropped,
        rotations.token_rotated,
    ]


def test_round_1_the_new_cipher_key_is_accepted_for_decryption_only(rotations: Rotations) -> None:
    settings = rotations.accepted.settings
    assert (secret(settings, "cipher_key"), secret(settings, "previous_cipher_keys")) == (OLD_KEY, [NEW_KEY])
    assert list(rotations.accepted.drop_ins) == ["previous-cipher-keys.conf"]


def test_round_2_the_new_key_encrypts_and_the_old_one_still_decrypts(rotations: Rotations) -> None:
    settings = rotations.switched.settings
    assert (secret(settings, "cipher_key"), secret(settings, "previous_cipher_keys")) == (NEW_KEY, [OLD_KEY])


def test_round_3_the_old_key_and_its_drop_in_are_gone(rotations: Rotations) -> None:
    settings = rotations.dropped.settings
    assert (secret(settings, "cipher_key"), secret(settings, "previous_cipher_keys")) == (NEW_KEY, [])
    assert "previous_cipher_keys" not in rotations.dropped.modes
    assert list(rotations.dropped.drop_ins) == ["previous-device-credentials.conf"]


def test_the_device_credential_rotates_and_every_old_one_is_kept(rotations: Rotations) -> None:
    once, twice = rotations.device_rotated.settings, rotations.device_rotated_again.settings
    assert (secret(once, "device_credential"), secret(once, "previous_device_credentials")) == (
        NEW_CREDENTIAL,
        [OLD_CREDENTIAL],
    )
    assert (secret(twice, "device_credential"), secret(twice, "previous_device_credentials")) == (
        NEWER_CREDENTIAL,
        [OLD_CREDENTIAL, NEW_CREDENTIAL],
    )


def test_the_api_token_is_a_new_random_one(rotations: Rotations) -> None:
    token = secret(rotations.token_rotated.settings, "api_token")
    assert isinstance(token, str) and re.fullmatch(r"[0-9a-f]{64}", token)
    assert token != rotations.token_before


def test_every_secret_file_stays_readable_by_root_alone(rotations: Rotations) -> None:
    for after in every_step(rotations):
        assert set(after.modes.values()) == {0o600}, after.modes


def test_every_block_restarts_the_service_and_shows_no_secret(rotations: Rotations) -> None:
    for after in every_step(rotations):
        assert after.calls[-1] == RESTART, after.calls
        for typed in (NEW_KEY, NEW_CREDENTIAL, NEWER_CREDENTIAL, OLD_KEY, OLD_CREDENTIAL):
            assert typed not in after.output
    # A block that adds or removes a drop-in reloads systemd before the restart.
    for after in (rotations.accepted, rotations.device_rotated, rotations.dropped):
        assert after.calls == ["daemon-reload", RESTART]


def test_each_drop_in_loads_a_list_secret_from_a_file_that_exists(rotations: Rotations) -> None:
    for after in every_step(rotations):
        for text in after.drop_ins.values():
            [line] = [line for line in text.splitlines() if line.startswith("LoadCredential=")]
            name, _, source = line.removeprefix("LoadCredential=").partition(":")
            assert name in LIST_SECRET_FIELDS
            assert source == f"/{CREDENTIALS / name}"
            assert name in after.modes  # else the service would not start


def test_the_drop_ins_verify_beside_the_unit(rotations: Rotations, tmp_path: Path) -> None:
    root = unit_root(tmp_path)
    drop_ins = root / DROP_INS.lstrip("/")
    drop_ins.mkdir(parents=True)
    for name, text in rotations.device_rotated.drop_ins.items():  # both drop-ins at once
        (drop_ins / name).write_text(text)
    assert len(list(drop_ins.iterdir())) == 2
    result = verify(root)
    assert (result.returncode, result.stderr) == (0, "")


def test_verify_reads_the_drop_ins(tmp_path: Path) -> None:
    # The silent verify above means something: a misspelt key in a drop-in is reported.
    root = unit_root(tmp_path)
    drop_ins = root / DROP_INS.lstrip("/")
    drop_ins.mkdir(parents=True)
    (drop_ins / "typo.conf").write_text("[Service]\nLoadCredentials=x:/etc/x\n")
    assert "LoadCredentials" in verify(root).stderr
