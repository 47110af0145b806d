"""The hospital-network settings as a technician writes them: each bad value refused at load with
the setting named and the reason (never a secret's value), the good ones read from the TOML file,
the environment and secret files, masked where secret, and carried to the media child."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from telehealth_client.config import ConfigError, load_settings
from telehealth_client.media.child_messages import DeviceChoice, Start, TurnServers, parse_request
from telehealth_client.media.common import TurnConfig
from telehealth_client.media.worker import Devices
from telehealth_client.outbound import Outbound, Proxy
from tests.support.tls_front import ThrowawayCa

pytestmark = pytest.mark.integration

SECRET = "cart-7:hunter2"


@pytest.fixture
def ca(tmp_path: Path) -> ThrowawayCa:
    return ThrowawayCa.make(tmp_path / "ca")


def _problems(environment: dict[str, str], config: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        load_settings(config, environ=environment)
    return refused.value.problems


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("http://cart:hunter2@proxy.hospital.example:3128", "must not hold credentials"),
        ("https://proxy.hospital.example:3128", "must be http://host:port"),
        ("proxy.hospital.example:3128", "must be http://host:port"),
        ("http://proxy.hospital.example", "must name the proxy's port"),
        ("http://proxy.hospital.example:0", "must name the proxy's port"),
        ("http://proxy.hospital.example:70000", "port that is not a number from 1 to 65535"),
        ("http://proxy.hospital.example:3128/pac", "without a path or query"),
        ("http://:3128", "has no host"),
    ],
)
def test_a_bad_proxy_url_is_refused_naming_the_setting(value: str, reason: str) -> None:
    (problem,) = _problems({"TELEHEALTH_HTTPS_PROXY": value})
    assert problem.startswith("https_proxy (TELEHEALTH_HTTPS_PROXY): ")
    assert reason in problem
    assert "hunter2" not in problem


def test_proxy_credentials_are_a_secret_in_the_right_shape_for_a_proxy(tmp_path: Path) -> None:
    (problem,) = _problems({"TELEHEALTH_PROXY_AUTHORIZATION": SECRET})
    assert problem == "settings: proxy_authorization is set but https_proxy is not"
    (problem,) = _problems(
        {"TELEHEALTH_HTTPS_PROXY": "http://proxy:3128", "TELEHEALTH_PROXY_AUTHORIZATION": "hunter2"}
    )
    assert problem == (
        "proxy_authorization (TELEHEALTH_PROXY_AUTHORIZATION): must be user:password"
        " (the proxy's Basic credentials)"
    )
    config = tmp_path / "agent.toml"
    config.write_text(f'https_proxy = "http://proxy:3128"\nproxy_authorization = "{SECRET}"\n')
    (problem,) = _problems({}, config)
    assert problem.startswith("proxy_authorization (config file): secrets are not read from the config file")
    # From a secret file, masked wherever the settings are shown.
    secret = tmp_path / "proxy_authorization"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    config.write_text('https_proxy = "http://Proxy.Hospital.example:3128/"\n')
    settings = load_settings(config, environ={"TELEHEALTH_PROXY_AUTHORIZATION_FILE": str(secret)})
    assert settings.https_proxy == "http://proxy.hospital.example:3128"
    assert settings.redacted()["proxy_authorization"] == "<set>"
    assert SECRET not in repr(settings) and SECRET not in str(settings.redacted())
    assert settings.source_of("https_proxy") == f"config file {config}"
    outbound = Outbound.from_settings(settings)
    assert outbound.proxy == Proxy("proxy.hospital.example", 3128, SECRET)
    assert SECRET not in repr(outbound)


def test_no_proxy_reads_a_list_or_a_line_and_refuses_what_is_not_a_host(tmp_path: Path) -> None:
    line = "clinic.example.org, .hospital.local *.lan 10.0.0.7"
    settings = load_settings(environ={"TELEHEALTH_NO_PROXY": line})
    assert settings.no_proxy == ["clinic.example.org", ".hospital.local", ".lan", "10.0.0.7"]
    config = tmp_path / "agent.toml"
    config.write_text('no_proxy = ["clinic.example.org"]\n')
    assert load_settings(config, environ={}).no_proxy == ["clinic.example.org"]
    (problem,) = _problems({"TELEHEALTH_NO_PROXY": "clinic.example.org,*"})
    assert problem == (
        "no_proxy (TELEHEALTH_NO_PROXY): item 2 ('*') would bypass the proxy for every host:"
        " unset https_proxy instead"
    )
    (problem,) = _problems({"TELEHEALTH_NO_PROXY": "https://clinic.example.org"})
    assert problem.startswith("no_proxy (TELEHEALTH_NO_PROXY): item 1 ('https://clinic.example.org') is not")

    outbound = Outbound(Proxy("proxy", 3128), no_proxy=(".hospital.local", "clinic.example.org"))
    assert outbound.proxy_for("pacs.hospital.local") is None
    assert outbound.proxy_for("CLINIC.example.org.") is None
    assert outbound.proxy_for("ps.pndsn.com") == Proxy("proxy", 3128)
    assert outbound.proxy_for("ps.pndsn.com", tls=False) is None  # the proxy carries TLS only
    assert outbound.proxy_for("evilhospital.local") == Proxy("proxy", 3128)


def test_a_ca_bundle_must_be_a_readable_file_of_certificates(ca: ThrowawayCa, tmp_path: Path) -> None:
    assert load_settings(environ={"TELEHEALTH_CA_BUNDLE": str(ca.ca_file)}).ca_bundle == ca.ca_file
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    cases = {
        tmp_path / "missing.pem": "No such file or directory",
        tmp_path: "is not a regular file",
        empty: "holds no readable PEM certificate",
        garbage: "holds no readable PEM certificate",
        ca.key_file: "holds a private key: give the CA certificates only",
    }
    for path, reason in cases.items():
        (problem,) = _problems({"TELEHEALTH_CA_BUNDLE": str(path)})
        assert problem.startswith(f"ca_bundle (TELEHEALTH_CA_BUNDLE): {path}"), problem
        assert reason in problem, problem
        assert "PRIVATE" not in problem
    config = tmp_path / "agent.toml"
    config.write_text(f'ca_bundle = "{empty}"\n')
    (problem,) = _problems({}, config)
    assert problem.startswith("ca_bundle (config file): ")


def test_the_media_child_is_handed_the_same_route(ca: ThrowawayCa) -> None:
    outbound = Outbound(Proxy("proxy.hospital.example", 3128, SECRET), ("pacs.lan",), ca.ca_file)
    turn = TurnConfig(("turn:turn.example:3478", "turns:turn.example:443?transport=tcp"), "u", "c", outbound)
    # Behind a proxy, aiortc (which uses only the first TURN URL) is given the one that can cross it.
    assert turn.ordered_urls == ("turns:turn.example:443?transport=tcp", "turn:turn.example:3478")
    assert turn.first_turn.tls
    sent = Start(id=1, turn=TurnServers.of(turn), devices=DeviceChoice(**asdict(Devices())))
    received = parse_request(json.loads(sent.model_dump_json()))  # as the child reads its stdin
    assert isinstance(received, Start)
    assert received.turn.config() == turn
    assert received.turn.config().outbound.proxy == outbound.proxy  # credentials too, over stdin only
