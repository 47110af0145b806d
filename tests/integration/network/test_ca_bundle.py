"""TLS verified against the hospital's own CA, given as ``ca_bundle``: with it the agent's bus and
clinic client connect (the bundle is trusted besides the system's CAs); without it, or with
another CA's, the very same connections fail with the certificate named plainly."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from telehealth_client.agent import bus_config
from telehealth_client.config import load_settings
from telehealth_client.outbound import Outbound
from telehealth_client.pubsub.bus import ConnectionStatus, StatusChange
from telehealth_client.pubsub.pubnub_bus import PubNubBus
from telehealth_client.security.clinic_client import ClinicClient, ClinicError
from telehealth_devstack.stack import DevStack
from tests.support.consultation import NURSE, WAIT
from tests.support.logs import LogLines
from tests.support.recorder import Recorder
from tests.support.tls_front import ThrowawayCa, TlsFront

pytestmark = pytest.mark.integration

UNTRUSTED = "TLS certificate not trusted (unable to get local issuer certificate)"


def _settings(stack: DevStack, relay: TlsFront, clinic: TlsFront, bundle: Path | None) -> dict[str, str]:
    environment = {
        **stack.agent_environment(NURSE),
        "TELEHEALTH_ORIGIN": relay.origin,
        "TELEHEALTH_SSL": "true",
        "TELEHEALTH_CLINIC_URL": clinic.url,
        "TELEHEALTH_RECONNECT_MAX_SECONDS": "0.5",
    }
    if bundle is not None:
        environment["TELEHEALTH_CA_BUNDLE"] = str(bundle)
    return environment


async def _connect(environment: dict[str, str]) -> tuple[StatusChange, ClinicError | None]:
    """What the bus and the clinic client built from these settings get: the bus's first status
    past connecting (access denied: the relay answered, as it has no token), the clinic's error."""
    settings = load_settings(environ=environment)
    outbound = Outbound.from_settings(settings)
    await outbound.prepare()
    bus = PubNubBus(bus_config(settings, outbound=outbound))
    credential = settings.require_secret("device_credential").get_secret_value()
    clinic = ClinicClient(settings.clinic_url, credential, outbound=outbound)
    changes = Recorder()
    bus.add_status_listener(changes)
    error = None
    try:
        try:
            await clinic.turn_credentials(NURSE)
        except ClinicError as exc:
            error = exc
        await bus.subscribe([f"notification.{NURSE}"])
        past = (ConnectionStatus.ACCESS_DENIED, ConnectionStatus.RECONNECTING, ConnectionStatus.CONNECTED)
        found = await changes.wait_for(lambda change: change.status in past, within=WAIT)
    finally:
        await asyncio.gather(bus.aclose(), clinic.aclose())
    first: StatusChange = found[0]
    return first, error


async def test_the_bundle_is_trusted_and_without_it_the_certificate_is_named(
    stack: DevStack,
    relay_front: TlsFront,
    clinic_front: TlsFront,
    ca: ThrowawayCa,
    tmp_path: Path,
    log_lines: LogLines,
) -> None:
    trusted, clinic_error = await _connect(_settings(stack, relay_front, clinic_front, ca.ca_file))
    assert (trusted.status, clinic_error) == (ConnectionStatus.ACCESS_DENIED, None)

    for bundle in (None, (await asyncio.to_thread(ThrowawayCa.make, tmp_path / "other-ca")).ca_file):
        failed, clinic_error = await _connect(_settings(stack, relay_front, clinic_front, bundle))
        assert (failed.status, failed.reason) == (ConnectionStatus.RECONNECTING, UNTRUSTED)
        assert clinic_error is not None
        assert clinic_error.reason == (
            "the clinic backend's TLS certificate is not trusted"
            " (unable to get local issuer certificate); see ca_bundle"
        )
    assert any(f"error={UNTRUSTED}" in line for line in log_lines.lines if "fault started" in line)


async def test_the_system_cas_stay_trusted_beside_the_bundle(ca: ThrowawayCa) -> None:
    # Added to the system's store, never instead of it: a public PubNub origin still verifies.
    outbound = Outbound(ca_bundle=ca.ca_file)
    await outbound.prepare()
    assert outbound.ssl_context is not None
    system = await asyncio.to_thread(lambda: ssl.create_default_context().cert_store_stats()["x509_ca"])
    assert outbound.ssl_context.cert_store_stats()["x509_ca"] == system + 1
