"""The product (``telehealth_client``, ``devices``) stands without the development stack: a kiosk
install has no ``telehealth_devstack`` at all, and nothing of the product may need it."""

from __future__ import annotations

import subprocess
import sys

# Run first in each probe: ``telehealth_devstack`` cannot be imported, as on a kiosk.
WITHOUT_THE_STACK = """
import importlib.abc, sys

class NoDevStack(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "telehealth_devstack" or name.startswith("telehealth_devstack."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoDevStack())
"""


def run_without_the_stack(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_STACK + code], capture_output=True, text=True, timeout=120
    )


def test_every_product_module_imports_with_the_development_stack_absent() -> None:
    result = run_without_the_stack(
        """
import importlib, pkgutil
import devices, telehealth_client

names = []
for package in (telehealth_client, devices):
    names.append(package.__name__)
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not module.name.endswith(".__main__"):  # runs the command line when imported
            names.append(module.name)
for name in names:
    importlib.import_module(name)
assert not [m for m in sys.modules if m.startswith("telehealth_devstack")]
print(*names)
"""
    )
    assert result.returncode == 0, result.stderr
    imported = set(result.stdout.split())
    # Every folder was walked, down to the leaves, not an empty package.
    assert {
        "telehealth_client.media.call_status",
        "telehealth_client.pubsub.pubnub_bus",
        "devices.cli",
    } <= imported


def test_the_blocker_would_catch_a_product_module_that_needed_the_stack() -> None:
    """The probe above is not vacuous: with the blocker in place the stack cannot be imported."""
    result = run_without_the_stack("import telehealth_devstack.stack")
    assert result.returncode != 0
    assert "No module named 'telehealth_devstack" in result.stderr


def test_demo_and_devstack_say_how_to_install_the_stack_when_it_is_absent() -> None:
    for command in ("demo", "devstack"):
        result = run_without_the_stack(
            f"from telehealth_client.cli import main\nraise SystemExit(main([{command!r}]))"
        )
        assert result.returncode == 2, result.stderr
        assert f"telehealth-agent: {command}: the development stack is not installed" in result.stderr
        assert "pip install -e devstack/" in result.stderr
        assert "Traceback" not in result.stderr
        # Whatever options were given.
        with_options = run_without_the_stack(
            f"from telehealth_client.cli import main\nraise SystemExit(main([{command!r}, '--json', 'x']))"
        )
        assert with_options.returncode == 2 and "not installed" in with_options.stderr
