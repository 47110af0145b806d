"""``telehealth-agent devstack``: the development stack in the foreground, its settings printed.

FOR DEVELOPMENT AND NEWCOMERS: nothing here runs in production.

Public API: ``run_devstack(env_file, open_access, state_dir) -> int`` (0 stopped by a signal, 2 an
``--env-file`` or ``--state-dir`` that cannot be written: checked before anything is printed).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

from telehealth_client import logs
from telehealth_client.agent import run_until_signalled
from telehealth_devstack.private_file import write_private
from telehealth_devstack.stack import AUDITOR_USER_ID, DevStack, DevStackKeys

# The kiosk's local API on the documented default port; each cart's on the ports after it.
KIOSK_API_PORT = 8470
API_TOKENS_DIR = "api-tokens"

EXIT_USAGE = 2


def _write_env_file(path: Path, lines: list[str]) -> None:
    # The file holds development keys: readable by its owner only (mkstemp's 0600). It appears
    # complete or not at all, so a script may wait for it to exist and then read it.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write("\n".join(lines) + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _unwritable_env_file(path: Path) -> str | None:
    """Why ``path`` cannot take the env file, or None: checked before any secret is printed."""
    if path.exists():
        if not path.is_file():
            return "is not a regular file"
        if not os.access(path, os.W_OK):
            return "Permission denied"
    try:
        # The same kind of file the final write makes, then gone: nothing appears before the stack runs.
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def _write_api_token(state_dir: Path, user_id: str, token: str) -> Path:
    """``user_id``'s local API token as a credential file (mode 0600, like a systemd credential):
    the env file names the file, never the token. Kept keys derive the same token again."""
    directory = state_dir / API_TOKENS_DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / user_id
    if path.exists() and path.read_text(encoding="utf-8") == token:
        return path
    path.unlink(missing_ok=True)
    write_private(path, token.encode())
    return path


def _with_api(environment: dict[str, str], state_dir: Path, port: int) -> dict[str, str]:
    """The settings with the local API token in a file and the API on ``port``."""
    settings = dict(environment)
    token = settings.pop("TELEHEALTH_API_TOKEN")
    path = _write_api_token(state_dir, settings["TELEHEALTH_USER_ID"], token)
    settings["TELEHEALTH_API_TOKEN_FILE"] = str(path)
    settings["TELEHEALTH_API_PORT"] = str(port)
    return settings


def _prepare_state_dir(path: Path) -> str | None:
    """Create ``path`` if needed and prove it writable; why not, or None."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def _devstack_usage_error(option: str, path: Path, reason: str) -> int:
    print(f"telehealth-agent: devstack: {option} {path}: {reason}", file=sys.stderr)
    return EXIT_USAGE


def run_devstack(env_file: Path | None, open_access: bool, state_dir: Path | None) -> int:
    # Every path is checked before the stack starts and before anything (a secret) is printed.
    if env_file is not None and (reason := _unwritable_env_file(env_file)) is not None:
        return _devstack_usage_error("--env-file", env_file, f"cannot be written: {reason}")
    temporary = state_dir is None
    state = Path(tempfile.mkdtemp(prefix="telehealth-devstack-")) if state_dir is None else state_dir
    try:
        if not temporary and (reason := _prepare_state_dir(state)) is not None:
            return _devstack_usage_error("--state-dir", state, f"cannot be written: {reason}")
        return _serve_devstack(env_file, open_access, state, temporary)
    finally:
        if temporary:
            shutil.rmtree(state, ignore_errors=True)


def _serve_devstack(env_file: Path | None, open_access: bool, state_dir: Path, temporary: bool) -> int:
    try:
        keys = DevStackKeys.load_or_create(state_dir / "keys.json")
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        return _devstack_usage_error("--state-dir", state_dir, f"keys: {reason}")
    logs.configure("INFO", "kv")
    stack = DevStack(enforce_access=not open_access, keys=keys, state_dir=state_dir)

    async def started() -> None:
        await stack.start()
        kiosk = await asyncio.to_thread(_with_api, stack.agent_environment(), state_dir, KIOSK_API_PORT)
        lines = [f"{name}={value}" for name, value in kiosk.items()]
        print("# development stack running; settings for a patient kiosk agent:", flush=True)
        print("\n".join(lines), flush=True)
        # Each provider's or nurse's own device credential: it mints tokens only for that user.
        for number, (user_id, user) in enumerate(stack.users.items(), start=1):
            own = await asyncio.to_thread(
                _with_api, stack.agent_environment(user_id), state_dir, KIOSK_API_PORT + number
            )
            extra = {k: v for k, v in own.items() if kiosk.get(k) != v}
            settings = " ".join(f"{name}={value}" for name, value in extra.items())
            print(
                f"# {user.role} {user_id}'s agent: the settings above with {settings} "
                f"(departmentId {user.department_id})",
                flush=True,
            )
        print(
            f"# auditor {AUDITOR_USER_ID} (GET /api/audit-events, nothing else): "
            f"Authorization: Bearer {stack.keys.auditor_credential}",
            flush=True,
        )
        print(f"# provider console (open in a browser on this machine): {stack.console_url}/", flush=True)
        kept = "temporary, removed at exit" if temporary else "kept across restarts"
        print(f"# state directory: {state_dir} ({kept})", flush=True)
        if env_file is not None:
            await asyncio.to_thread(_write_env_file, env_file, lines)
            print(f"# written to {env_file}", flush=True)

    return asyncio.run(run_until_signalled(started, stack.stop))
