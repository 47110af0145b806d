"""The layout's rules, read from the source's imports (every import: at the top, in a function, or
for type checking only):

- ``protocol/`` is pure: it imports nothing of the product but itself;
- ``devices/`` knows no PubNub and no aiortc (nor the product's bus or media);
- the product imports nothing of the development stack (tests/unit/test_product_boundary.py
  proves the same at run time);
- no two folders of ``telehealth_client`` import each other (the call reads its consultation
  through ``media/call_session.py``'s interface, not the consultation's code).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("telehealth_client", "devices")


def modules(package: str, root: Path = ROOT) -> dict[str, Path]:
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def folder_of(module: str) -> str | None:
    """The folder (or top-level module) of ``telehealth_client`` that ``module`` belongs to."""
    parts = module.split(".")
    if parts[0] != "telehealth_client" or len(parts) < 2:
        return None
    return parts[1]


def product_modules() -> dict[str, Path]:
    return {name: path for package in PRODUCT for name, path in modules(package).items()}


def test_protocol_is_pure() -> None:
    for name, path in modules("telehealth_client/protocol").items():
        ours = {m for m in imported(path) if m.startswith(("telehealth_client", "devices"))}
        assert {m for m in ours if not m.startswith("telehealth_client.protocol")} == set(), name


def test_devices_know_no_pubnub_and_no_aiortc() -> None:
    libraries = {"pubnub", "aiortc", "aioice", "av"}
    ours = ("telehealth_client.pubsub", "telehealth_client.media")
    for name, path in modules("devices").items():
        bad = {m for m in imported(path) if m.split(".")[0] in libraries or m.startswith(ours)}
        assert bad == set(), name


def test_the_product_imports_nothing_of_the_development_stack() -> None:
    for name, path in product_modules().items():
        assert not [m for m in imported(path) if m.startswith("telehealth_devstack")], name


def folder_dependencies(root: Path = ROOT) -> dict[str, set[str]]:
    depends: dict[str, set[str]] = defaultdict(set)
    known = modules("telehealth_client", root)
    for name, path in known.items():
        source = folder_of(name)
        for target in imported(path):
            # "from telehealth_client.x import y": y may be a module or a name in x.
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            folder = folder_of(target)
            if source is not None and folder is not None and folder != source:
                depends[source].add(folder)
    return depends


def cycles(depends: dict[str, set[str]]) -> set[frozenset[str]]:
    return {frozenset({a, b}) for a, targets in depends.items() for b in targets if a in depends.get(b, ())}


def test_no_two_folders_import_each_other() -> None:
    depends = folder_dependencies()
    assert "protocol" in depends["consultation"] and "media" in depends["consultation"]  # it reads them
    assert cycles(depends) == set()


def test_the_cycle_check_sees_a_cycle_when_there_is_one(tmp_path: Path) -> None:
    """Not vacuous: two folders that import each other, in every form an import takes, are found."""
    package = tmp_path / "telehealth_client"
    for folder in ("a", "b", "c"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "a" / "one.py").write_text("from telehealth_client.b.two import thing\n")
    (package / "b" / "two.py").write_text("def f():\n    from telehealth_client.a import one\n")
    (package / "c" / "three.py").write_text("import telehealth_client.a.one\n")
    assert cycles(folder_dependencies(tmp_path)) == {frozenset({"a", "b"})}
