"""Fixtures of the systemd service's tests: the product's wheel (and one of the next version, for
upgrades), and a root that scripts/install-kiosk.sh installed into once (``tests.support.service``)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
