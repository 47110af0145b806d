"""Fixtures of the systemd service's tests: the product's wheel (and one of the next version, for
upgrades), a root that scripts/install-kiosk.sh installed into once (``tests.support.service``),
the ``telehealth-agent run`` processes a test starts (``agents``, killed at its end) and a
development stack with a kiosk and a provider (``kiosk_stack``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from telehealth_devstack.stack import DevStack
from tests.support.api import KIOSK, PROVIDER
from tests.support.notify import Agents
from tests.support.service import (
    NEXT_VERSION,
    Installed,
    build_product_wheel,
    run_installer,
    system_skeleton,
)


@pytest.fixture(scope="module")
def product_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_product_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def next_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The product's wheel as its next release: version ``NEXT_VERSION``."""
    return build_product_wheel(tmp_path_factory.mktemp("next-wheel"), version=NEXT_VERSION)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, product_wheel: Path) -> Installed:
    """One install (the slow part: a virtual environment); tests that change it work on a copy."""
    root = tmp_path_factory.mktemp("kiosk-root")
    system_skeleton(root)
    result = run_installer(root, wheel=product_wheel)
    assert result.returncode == 0, result.stderr
    return Installed(root, product_wheel, result.stdout)


@pytest.fixture
async def agents() -> AsyncIterator[Agents]:
    started = Agents()
    yield started
    await started.aclose()


@pytest.fixture
async def kiosk_stack() -> AsyncIterator[DevStack]:
    async with DevStack(providers=(PROVIDER,), kiosks=(KIOSK,)) as stack:
        yield stack
