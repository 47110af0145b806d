"""``telehealth-agent devstack``: the development stack in the foreground, its settings printed.

FOR DEVELOPMENT AND NEWCOMERS: nothing here runs in production.

Every identity's agent gets its settings whole: the common ones, its own device credential, user ID,
role and department, its local API's port and token file, a state directory of its own under the
stack's (``agents/<user ID>``) and generated devices (``devices/<user ID>``: a test-pattern camera,
a tone as the microphone; ``ALSA_CONFIG_PATH`` names their ALSA configuration). The kiosk's are
printed (each provider's and nurse's as a comment line of what differs) and, with ``--env-file``,
written there; each identity's are also written beside it, one sourceable file each (``dev.env`` ->
``dev.<user ID>.env``), which the env file names in comment lines. So any identity's agent starts
from what was written: ``set -a; . dev.dr-demo.env; set +a; telehealth-agent run``.

Public API: ``run_devstack(env_file, open_access, state_dir, providers=None, nurses=None) -> int``
(0 stopped by a signal, 2 a bad or repeated ``--provider``/``--nurse``, or an ``--env-file`` or
``--state-dir`` that cannot be written: checked before anything is printed).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from telehealth_client import logs
from telehealth_client.agent import run_until_signalled
from telehealth_devstack.generated_devices import write_devices
from telehealth_devstack.identities import IdentityError, StaffIdentity, staff_identities
from telehealth_devstack.private_file import write_private
from telehealth_devstack.stack import AUDITOR_USER_ID, DEFAULT_KIOSK, DevStack, DevStackKeys

# The kiosk's local API on the documented default port; each cart's on the ports after it.
KIOSK_API_PORT = 8470
API_TOKENS_DIR = "api-tokens"
# Each agent's own state directory, under the stack's: two agents never share an outbox or a trail.
AGENTS_DIR = "agents"
# Each agent's generated camera, microphone and speaker.
DEVICES_DIR = "devices"

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


def identity_file(env_file: Path, user_id: str) -> Path:
    """Where ``user_id``'s own settings are written beside the env file: dev.env -> dev.<user_id>.env."""
    return env_file.with_name(f"{env_file.stem}.{user_id}{env_file.suffix}")


def _settings_lines(settings: dict[str, str]) -> list[str]:
    # Quoted only where the shell needs it (a path with a space): plain values stay as they are.
    return [f"{name}={shlex.quote(value)}" for name, value in settings.items()]


def _write_settings_files(env_file: Path, stack: DevStack, agents: dict[str, dict[str, str]]) -> list[Path]:
    """Each identity's file, then the env file naming them (so when it appears, they all exist)."""
    kiosk = stack.default_kiosk
    index = ["# Each agent's own settings: set -a; . FILE; set +a; telehealth-agent run"]
    written = []
    for user_id, settings in agents.items():
        path = identity_file(env_file, user_id)
        _write_env_file(path, _settings_lines(settings))
        written.append(path)
        user = stack.users.get(user_id)
        who = (
            f"kiosk {user_id}" if user is None else f"{user.role} {user_id} (department {user.department_id})"
        )
        index.append(f"# {who}: {path}")
    _write_env_file(env_file, _settings_lines(agents[kiosk]) + index)
    return written


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
    """The settings with the local API token in a file, the API on ``port`` and a state directory."""
    settings = dict(environment)
    user_id = settings["TELEHEALTH_USER_ID"]
    token = settings.pop("TELEHEALTH_API_TOKEN")
    path = _write_api_token(state_dir, user_id, token)
    settings["TELEHEALTH_API_TOKEN_FILE"] = str(path)
    settings["TELEHEALTH_API_PORT"] = str(port)
    settings["TELEHEALTH_STATE_DIR"] = str(state_dir / AGENTS_DIR / user_id)
    return settings


def _agent_settings(stack: DevStack, state_dir: Path) -> dict[str, dict[str, str]]:
    """Every identity's whole settings, the kiosk's first; API ports from ``KIOSK_API_PORT`` on;
    generated devices, so that its agent can hold a call on any machine."""
    identities = [stack.default_kiosk, *stack.users]
    return {
        user_id: {
            **_with_api(stack.agent_environment(user_id), state_dir, KIOSK_API_PORT + number),
            **write_devices(state_dir / DEVICES_DIR / user_id).settings(),
        }
        for number, user_id in enumerate(identities)
    }


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


def run_devstack(
    env_file: Path | None,
    open_access: bool,
    state_dir: Path | None,
    providers: list[str] | None = None,
    nurses: list[str] | None = None,
) -> int:
    # Every identity and path is checked before the stack starts and before anything (a secret)
    # is printed.
    try:
        staff = staff_identities(providers, nurses, DEFAULT_KIOSK)
    except IdentityError as exc:
        print(f"telehealth-agent: devstack: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if env_file is not None:
        for path in (env_file, *(identity_file(env_file, user) for user in (DEFAULT_KIOSK, *_ids(staff)))):
            if (reason := _unwritable_env_file(path)) is not None:
                return _devstack_usage_error("--env-file", path, f"cannot be written: {reason}")
    temporary = state_dir is None
    if state_dir is None:
        state = Path(tempfile.mkdtemp(prefix="telehealth-devstack-"))
    else:  # absolute: the agents refuse a relative state_dir (a service runs in /)
        state = state_dir.absolute()
    try:
        if not temporary and (reason := _prepare_state_dir(state)) is not None:
            return _devstack_usage_error("--state-dir", state, f"cannot be written: {reason}")
        return _serve_devstack(env_file, open_access, state, temporary, staff)
    finally:
        if temporary:
            shutil.rmtree(state, ignore_errors=True)


def _ids(staff: tuple[StaffIdentity, ...]) -> list[str]:
    return [identity.user_id for identity in staff]


def _stack(
    keys: DevStackKeys, open_access: bool, state_dir: Path, staff: tuple[StaffIdentity, ...]
) -> DevStack:
    """The stack, its clinic knowing each identity (role, department; providers on call for theirs)."""
    return DevStack(
        enforce_access=not open_access,
        keys=keys,
        state_dir=state_dir,
        providers=[identity.user_id for identity in staff if identity.role == "provider"],
        nurses=[identity.user_id for identity in staff if identity.role == "nurse"],
        departments={identity.user_id: identity.department_id for identity in staff},
    )


def _serve_devstack(
    env_file: Path | None,
    open_access: bool,
    state_dir: Path,
    temporary: bool,
    staff: tuple[StaffIdentity, ...],
) -> int:
    try:
        keys = DevStackKeys.load_or_create(state_dir / "keys.json")
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        return _devstack_usage_error("--state-dir", state_dir, f"keys: {reason}")
    logs.configure("INFO", "kv")
    stack = _stack(keys, open_access, state_dir, staff)

    async def started() -> None:
        await stack.start()
        agents = await asyncio.to_thread(_agent_settings, stack, state_dir)
        kiosk = agents[stack.default_kiosk]
        print("# development stack running; settings for a patient kiosk agent:", flush=True)
        print("\n".join(_settings_lines(kiosk)), flush=True)
        # Each provider's or nurse's own device credential: it mints tokens only for that user.
        for user_id, user in stack.users.items():
            extra = {k: v for k, v in agents[user_id].items() if kiosk.get(k) != v}
            settings = " ".join(_settings_lines(extra))
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
            written = await asyncio.to_thread(_write_settings_files, env_file, stack, agents)
            for user_id, path in zip(agents, written, strict=True):
                print(f"# {user_id}'s agent's settings written to {path}", flush=True)
            print(f"# written to {env_file}", flush=True)

    return asyncio.run(run_until_signalled(started, stack.stop))
