#!/usr/bin/env bash
# Installs the telehealth agent on a kiosk or cart as the systemd service kiosk.service, or
# upgrades the one installed in place:
#   /opt/telehealth-agent/releases/<version>       the agent alone (this repository's root package;
#                                                  never devstack/) in a virtual environment of its
#                                                  own per version, with the unit it came with
#   /opt/telehealth-agent/venv                     a link to the release that runs (the unit's path)
#   /opt/telehealth-agent/venv.previous            a link to the release it replaced (--rollback)
#   /opt/telehealth-agent/accounts                 which of the user and group it created (the
#                                                  ones --uninstall removes)
#   /etc/systemd/system/kiosk.service              the hardened unit (kiosk.service of this repository)
#   /etc/telehealth-agent/agent.toml               example settings (packaging/agent.toml), 0644
#   /etc/telehealth-agent/credentials/<name>       one file per secret, root-owned 0600: placeholders,
#                                                  but api_token, which is generated here
#   the system user "telehealth"                   no home, no shell, no password; in the group
#                                                  "telehealth", which it creates unless it exists
# Then it prints what is left to fill in and the command that starts the service.
#
# Usage: sudo scripts/install-kiosk.sh [--root DIR] [--wheel FILE]
#        sudo scripts/install-kiosk.sh --rollback [--root DIR]
#        sudo scripts/install-kiosk.sh --uninstall [--purge] [--root DIR]
#   --root DIR    install into DIR instead of / (tests only: the release's scripts and
#                 pyvenv.cfg name DIR and this machine's Python, so DIR is no image to copy to
#                 another system). The user is added with `useradd --prefix DIR` when
#                 DIR/etc/passwd exists, and only printed otherwise; systemctl is never run.
#   --wheel FILE  install this built wheel of the agent instead of building the repository root
#                 (offline installs; pip's own PIP_* variables apply as usual)
#   --rollback    make the previous release the one that runs again, with its unit (run again,
#                 it returns to the newer one); the state directory is left as it is
#   --uninstall   stop and disable the service; remove the unit with its drop-in directory
#                 (kiosk.service.d/: a rotation's or a proxy's), /opt/telehealth-agent,
#                 /etc/telehealth-agent, and the user and group this installer created; keep
#                 the state directory /var/lib/telehealth-agent
#   --purge       with --uninstall: the state directory too (the audit trail and outboxes)
# Upgrades: another version is built beside the running one, then the link switches to it and
# the service restarts if it was running; the settings, credentials and state directory are kept
# (the agent migrates its stores at its next start). The same version again changes nothing.
# Safe to run twice: the settings and credential files are never overwritten once they exist,
# the unit is rewritten with the same content, and the user is added only if missing.
# The dependencies are installed at the versions the tests ran with (pip's -c with
# packaging/constraints.txt; packaging/freeze_constraints.py regenerates it).
# Exit codes: 0 done, 1 a step failed (it says which, and what it left), 2 usage error or not run
# as root. PYTHON picks the Python (3.11 or newer) of the virtual environment; default python3.
# It must be a system-wide one: the service cannot see /home, /root or /tmp (ProtectHome=,
# PrivateTmp=), so a pyenv interpreter there is refused.
set -Eeuo pipefail

readonly UNIT_NAME=kiosk.service
readonly SERVICE_USER=telehealth
readonly DISTRIBUTION=telehealth-client
readonly PLACEHOLDER_MARK="FILL-IN"
# One secret per line: name, then what to put in its file (the unit's LoadCredential= lines).
readonly SECRETS="publish_key|the PubNub publish key of the kiosk keyset
subscribe_key|the PubNub subscribe key of the kiosk keyset
cipher_key|the AES-256 cipher key of every PHI channel (at least 16 characters)
device_credential|this kiosk's device credential for the clinic backend"
# Where each release keeps the unit it came with (--rollback puts it back).
readonly RELEASE_UNIT=share/telehealth-agent/$UNIT_NAME
# What kiosk.service cannot see (ProtectHome=yes, PrivateTmp=yes): no interpreter may live there.
readonly HIDDEN_FROM_SERVICE="/home /root /run/user /tmp /var/tmp"

repo=$(cd "$(dirname "$0")/.." && pwd)
root=""
wheel=""
action=install
purge=false
building=""  # a release being built, removed if the installer stops before it is whole
python=${PYTHON:-python3}
left=()      # what this run wrote so far, named when a later step fails

fail_usage() {
    echo "install-kiosk.sh: $1" >&2
    exit 2
}

fail() {
    echo "install-kiosk.sh: $1" >&2
    exit 1
}

# Any other command that fails (set -e) ends the run with 1, naming it and what this run left.
on_error() {
    local status=$1 line=$2 command=$3 listed
    if [ "$BASH_SUBSHELL" -eq 0 ]; then
        echo "install-kiosk.sh: line $line: '$command' failed (exit $status)" >&2
        if [ ${#left[@]} -gt 0 ]; then
            printf -v listed '%s, ' "${left[@]}"
            echo "install-kiosk.sh: left as they are: ${listed%, } (run it again once fixed: it keeps them; --uninstall removes them)" >&2
        fi
    fi
    exit 1
}
trap 'on_error $? $LINENO "$BASH_COMMAND"' ERR

case " $* " in
    *" -h "*|*" --help "*) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
esac
if [ "$(id -u)" -ne 0 ]; then
    # It creates a system user and writes /opt, /etc and root-only credential files.
    fail_usage "must run as root (it adds the '$SERVICE_USER' user and writes root-only files under /etc): run it with sudo"
fi
while [ $# -gt 0 ]; do
    case "$1" in
        --root)
            [ $# -ge 2 ] || fail_usage "--root needs a directory"
            [ -d "$2" ] || fail_usage "--root $2: not a directory"
            root=$(cd "$2" && pwd)
            shift 2
            ;;
        --wheel)
            [ $# -ge 2 ] || fail_usage "--wheel needs a file"
            [ -f "$2" ] || fail_usage "--wheel $2: no such file"
            wheel=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
            shift 2
            ;;
        --uninstall) [ "$action" = install ] || fail_usage "--uninstall and --$action exclude each other"; action=uninstall; shift ;;
        --rollback) [ "$action" = install ] || fail_usage "--rollback and --$action exclude each other"; action=rollback; shift ;;
        --purge) purge=true; shift ;;
        *) fail_usage "unknown argument: $1 (see --help)" ;;
    esac
done
if [ "$purge" = true ] && [ "$action" != uninstall ]; then
    fail_usage "--purge goes with --uninstall"
fi
if [ -n "$wheel" ] && [ "$action" != install ]; then
    fail_usage "--wheel goes with an install or upgrade, not --$action"
fi

readonly opt_dir="$root/opt/telehealth-agent"
readonly releases="$opt_dir/releases"
readonly venv="$opt_dir/venv"
readonly previous="$opt_dir/venv.previous"
readonly unit_path="$root/etc/systemd/system/$UNIT_NAME"
readonly wants_link="$root/etc/systemd/system/multi-user.target.wants/$UNIT_NAME"
readonly etc_dir="$root/etc/telehealth-agent"
readonly settings="$etc_dir/agent.toml"
readonly credentials="$etc_dir/credentials"
readonly state_dir="$root/var/lib/telehealth-agent"
readonly dropins="$unit_path.d"
readonly constraints="$repo/packaging/constraints.txt"
# The accounts this installer created ("user", "group"), one a line: the uninstall removes those.
readonly accounts="$opt_dir/accounts"

# systemctl only on the running system itself (never for --root), and only when systemd runs it.
systemd_running() {
    [ -z "$root" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null
}

user_tool_args() {
    # useradd/userdel on DIR/etc/passwd when installing into a root that has one.
    if [ -n "$root" ]; then
        printf '%s\n' --prefix "$root"
    fi
}

user_files_present() {
    [ -z "$root" ] || [ -f "$root/etc/passwd" ]
}

user_exists() {
    if [ -n "$root" ]; then
        grep -q "^$SERVICE_USER:" "$root/etc/passwd" 2>/dev/null
    else
        getent passwd "$SERVICE_USER" >/dev/null
    fi
}

group_exists() {
    if [ -n "$root" ]; then
        grep -q "^$SERVICE_USER:" "$root/etc/group" 2>/dev/null
    else
        getent group "$SERVICE_USER" >/dev/null
    fi
}

# Writes stdin to $1 with mode $2, root-owned, unless $1 exists (the operator may have filled it
# in). Through a temporary file in the same directory, so a half-written file never appears.
write_new_file() {
    local path=$1 mode=$2 temporary
    if [ -e "$path" ]; then
        cat >/dev/null
        return 0
    fi
    temporary=$(mktemp "$path.XXXXXX")
    cat >"$temporary"
    chmod "$mode" "$temporary"
    chown root:root "$temporary"
    mv -f "$temporary" "$path"
}

# Points the link $1 at $2 (relative to /opt/telehealth-agent, so it also holds under --root) in
# one rename: the unit never sees the link missing.
point() {
    local link=$1 target=$2
    ln -s "$target" "$link.new"
    mv -T -f "$link.new" "$link"
}

check_python() {
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
        || fail "$python is not Python 3.11 or newer (set PYTHON)"
    # Under --root (tests) the service never runs what is built, so only a real install checks
    # that it could: the release's venv runs the interpreter it was made from, and its stdlib.
    [ -z "$root" ] || return 0
    "$python" -I - "$python" $HIDDEN_FROM_SERVICE <<'PY' || exit 1
import os
import sys

given, hidden = sys.argv[1], sys.argv[2:]
for what, path in (
    ("its interpreter", os.path.realpath(getattr(sys, "_base_executable", sys.executable))),
    ("its standard library", os.path.realpath(sys.base_prefix)),
):
    for top in hidden:
        if path == top or path.startswith(top + "/"):
            sys.exit(
                f"install-kiosk.sh: PYTHON={given}: {what} is {path}, under {top}, which kiosk.service "
                "cannot see (ProtectHome=yes, PrivateTmp=yes; it runs as the telehealth user), so the "
                "agent would not start. Use a system-wide Python 3.11 or newer: PYTHON=/usr/bin/python3"
            )
PY
}

# The version the wheel (or the repository's pyproject.toml) holds; refuses another distribution.
source_version() {
    "$python" - "$DISTRIBUTION" "${wheel:-$repo}" <<'PY'
import re
import sys
import tomllib
import zipfile
from email.parser import HeaderParser
from pathlib import Path

distribution, source = sys.argv[1], Path(sys.argv[2])
if source.is_dir():
    project = tomllib.loads((source / "pyproject.toml").read_text()).get("project", {})
    name, version, where = project.get("name"), project.get("version"), source / "pyproject.toml"
else:
    try:
        with zipfile.ZipFile(source) as archive:
            found = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
            metadata = HeaderParser().parsestr(archive.read(found[0]).decode()) if len(found) == 1 else {}
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError) as error:
        sys.exit(f"install-kiosk.sh: {source}: not a readable wheel ({error})")
    name, version, where = metadata.get("Name"), metadata.get("Version"), source
if re.sub(r"[-_.]+", "-", str(name)).lower() != distribution:
    sys.exit(f"install-kiosk.sh: {where}: not the {distribution} distribution (name: {name})")
if not isinstance(version, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.+!_-]*", version):
    sys.exit(f"install-kiosk.sh: {where}: no usable version (found: {version})")
print(version)
PY
}

# The agent's version installed in the virtual environment $1 (empty when it cannot tell). -I here
# and for pip: the virtual environment alone, not the current directory nor PYTHONPATH (a checkout
# with an editable install has its own egg-info, which pip and the lookup would take for the agent).
installed_version() {
    "$1/bin/python" -I -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' \
        "$DISTRIBUTION" 2>/dev/null || true
}

# The release $1 links to (a name under releases/), empty when $1 is no such link.
release_of() {
    local target
    [ -L "$1" ] || return 0
    target=$(readlink "$1")
    case "$target" in
        releases/*) [ -x "$opt_dir/$target/bin/telehealth-agent" ] && echo "${target#releases/}" ;;
    esac
    return 0
}

# An earlier installer put the virtual environment itself at venv/: it becomes a release like
# the others. Its scripts name their interpreter by the old path, so they are pointed at the new
# one: the release then runs from where it is, as current or previous.
adopt_venv_directory() {
    [ -d "$venv" ] && [ ! -L "$venv" ] || return 0
    local version
    version=$(installed_version "$venv")
    [ -n "$version" ] || fail "$venv: cannot tell which version of the agent it holds; move it away and run again"
    install -d -m 0755 -o root -g root "$releases"
    rm -rf "${releases:?}/$version"
    mv "$venv" "$releases/$version"
    "$python" - "$venv/bin/python" "$releases/$version/bin/python" <<'PY'
import sys
from pathlib import Path

old, new = (argument.encode() for argument in sys.argv[1:3])
for script in Path(sys.argv[2]).parent.iterdir():
    if script.is_symlink() or not script.is_file():
        continue
    content = script.read_bytes()
    if not content.startswith(b"#!"):
        continue
    # The interpreter is on the first line, or the second for pip's long-path /bin/sh wrapper.
    head = content.split(b"\n", 2)
    changed = b"\n".join([line.replace(old, new) for line in head[:2]] + head[2:])
    if changed != content:
        script.write_bytes(changed)
PY
    point "$venv" "releases/$version"
    echo "moved the agent $version from $venv to $releases/$version"
}

# A new release in releases/$1, built beside the one that runs; removed again if any step fails.
build_release() {
    local version=$1 release=$releases/$1 found
    install -d -m 0755 -o root -g root "$opt_dir" "$releases"
    rm -rf "$release"
    # Removed again unless install_all gets as far as linking it (finish_release).
    building=$release
    trap remove_unfinished_release EXIT
    "$python" -m venv "$release" || fail "$python -m venv $release failed (above); nothing else changed"
    # The repository root is the agent alone; devstack/ is a separate package it never installs.
    # -c: its dependencies at the versions the tests ran with, whatever day it is installed.
    "$release/bin/python" -I -m pip install -q --disable-pip-version-check -c "$constraints" "${wheel:-$repo}" \
        || fail "pip could not install ${wheel:-$repo} with $constraints (above); nothing else changed"
    found=$(installed_version "$release")
    [ "$found" = "$version" ] || fail "$release: pip installed version '$found' of the agent, not $version"
    install -D -m 0644 -o root -g root "$repo/kiosk.service" "$release/$RELEASE_UNIT"
}

# The release being built, and the directories it made if they are empty again: a first
# install that stops early leaves no /opt/telehealth-agent behind.
remove_unfinished_release() {
    [ -n "$building" ] || return 0
    rm -rf "$building"
    rmdir "$releases" "$opt_dir" 2>/dev/null || true
}

# The release being built is whole and linked: a later failure no longer removes it.
finish_release() {
    building=""
    trap - EXIT
}

# Every release but the one that runs and the previous one goes.
prune_releases() {
    local keep=("$(release_of "$venv")" "$(release_of "$previous")") path name
    for path in "$releases"/*; do
        [ -e "$path" ] || continue
        name=$(basename "$path")
        if [ "$name" != "${keep[0]}" ] && [ "$name" != "${keep[1]}" ]; then
            rm -rf "$path"
        fi
    done
}

install_unit() {
    install -d -m 0755 "$root/etc/systemd/system"
    install -m 0644 -o root -g root "$1" "$unit_path"
}

install_settings() {
    install -d -m 0755 -o root -g root "$etc_dir"
    install -d -m 0700 -o root -g root "$credentials"
    write_new_file "$settings" 0644 <"$repo/packaging/agent.toml"
    local name description
    while IFS='|' read -r name description; do
        # Two lines on purpose: the agent refuses a secret with a line break, so a kiosk never
        # starts on a placeholder.
        printf '%s: replace this whole file with %s, on one line.\n(Until then the agent refuses to start.)\n' \
            "$PLACEHOLDER_MARK" "$description" | write_new_file "$credentials/$name" 0600
    done <<<"$SECRETS"
    # The local API's bearer token: random, never shown (the kiosk's app reads this file).
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n' | write_new_file "$credentials/api_token" 0600
}

# Adds the user (in the group of its name: an existing one, else a new one) and notes in
# $accounts which of the two it created, for the uninstall.
add_user() {
    if user_exists; then
        # A user there before the first install is not the uninstall's to remove. (An install
        # without $accounts is an earlier installer's, which added both.)
        if [ ! -e "$accounts" ] && [ ! -e "$venv" ] && [ ! -L "$venv" ]; then
            install -d -m 0755 -o root -g root "$opt_dir"
            : >"$accounts"
        fi
        return 0
    fi
    local args=(--system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin) created=(user)
    # useradd --user-group refuses a group of that name (exit 9): a group an operator made, or the
    # one an earlier `userdel --prefix` kept (it reads no login.defs there, so USERGROUPS_ENAB is off).
    if group_exists; then
        args+=(--gid "$SERVICE_USER")
    else
        args+=(--user-group)
        created+=(group)
    fi
    if ! user_files_present; then
        echo "user: $root/etc/passwd does not exist; on the target it runs: useradd ${args[*]} $SERVICE_USER"
        return 0
    fi
    local prefix
    mapfile -t prefix < <(user_tool_args)
    useradd "${prefix[@]}" "${args[@]}" "$SERVICE_USER" \
        || fail "useradd ${args[*]} $SERVICE_USER failed (above); the release being built was removed, nothing else changed"
    install -d -m 0755 -o root -g root "$opt_dir"
    printf '%s\n' "${created[@]}" >"$accounts"
    left+=("the user $SERVICE_USER")
}

# Restarts the service when its state (systemctl is-active) is one of $@; says what it did.
restart_when() {
    if ! systemd_running; then
        echo "$UNIT_NAME: not restarted here (no systemd running this system, or --root)"
        return 0
    fi
    local state wanted
    state=$(systemctl is-active "$UNIT_NAME" 2>/dev/null || true)
    for wanted in "$@"; do
        if [ "$state" = "$wanted" ]; then
            # A crash loop may have used up the start limit (StartLimitBurst=): start afresh.
            systemctl reset-failed "$UNIT_NAME" 2>/dev/null || true
            systemctl restart "$UNIT_NAME"
            echo "$UNIT_NAME: restarted (it was $state)"
            return 0
        fi
    done
    echo "$UNIT_NAME: ${state:-not loaded}, left so"
}

print_todo() {
    local left=() key name
    for key in user_id organization_id clinic_url; do
        if grep -Eq "^$key = \"[^\"]*(-unconfigured|\\.invalid)\"" "$settings"; then
            left+=("  $settings: $key")
        fi
    done
    while IFS='|' read -r name _; do
        if grep -q "^$PLACEHOLDER_MARK" "$credentials/$name"; then
            left+=("  $credentials/$name: $(sed -n "1s/^$PLACEHOLDER_MARK: replace this whole file with //p" "$credentials/$name" | sed 's/, on one line\.$//')")
        fi
    done <<<"$SECRETS"
    echo "installed: the agent in $venv, $unit_path, settings in $etc_dir"
    echo "api_token: generated in $credentials/api_token (root only; give it to the kiosk's app)"
    if [ ${#left[@]} -gt 0 ]; then
        echo "fill in (each marked $PLACEHOLDER_MARK or with a placeholder value):"
        printf '%s\n' "${left[@]}"
    else
        echo "fill in: nothing left"
    fi
    echo "then start it: systemctl enable --now $UNIT_NAME"
}

install_all() {
    check_python
    [ -f "$constraints" ] || fail "$constraints is missing (packaging/freeze_constraints.py writes it); nothing changed"
    local version current
    version=$(source_version) || exit 1
    adopt_venv_directory
    current=$(release_of "$venv")
    if [ "$current" = "$version" ]; then
        echo "the agent $version is installed already: kept $opt_dir/releases/$version"
    else
        build_release "$version"
    fi
    # The user before any file: the user database is what another tool may hold locked or
    # clash with, and a refusal here leaves nothing but what ran before.
    add_user
    install -d -m 0755 -o root -g root "$opt_dir"
    install -m 0644 -o root -g root "$repo/README.md" "$opt_dir/README.md"
    left+=("$opt_dir/README.md")
    install_unit "$repo/kiosk.service"
    left+=("$unit_path")
    install_settings
    left+=("$etc_dir")
    if [ "$current" != "$version" ]; then
        # The previous release first: a stop between the two links leaves both on the old one.
        if [ -n "$current" ]; then
            point "$previous" "releases/$current"
        fi
        point "$venv" "releases/$version"
        finish_release
        prune_releases
    fi
    if systemd_running; then
        systemctl daemon-reload
    fi
    if [ -n "$current" ] && [ "$current" != "$version" ]; then
        echo "upgraded: the agent $current -> $version ($current kept: --rollback returns to it)"
        echo "kept: $settings, $credentials/, $state_dir (the agent migrates its stores at its next start)"
        restart_when active activating reloading
    fi
    print_todo
}

rollback() {
    local back current
    back=$(release_of "$previous")
    current=$(release_of "$venv")
    [ -n "$back" ] || fail "no previous release to roll back to ($previous is not a link to one under $releases)"
    [ -n "$current" ] || fail "$venv is not a link to a release under $releases: nothing to roll back from"
    point "$venv" "releases/$back"
    point "$previous" "releases/$current"
    if [ -f "$releases/$back/$RELEASE_UNIT" ]; then
        install_unit "$releases/$back/$RELEASE_UNIT"
    else
        echo "$releases/$back has no copy of its unit (an earlier installer's): kept $unit_path"
    fi
    if systemd_running; then
        systemctl daemon-reload
    fi
    echo "rolled back: the agent $current -> $back (--rollback again returns to $current)"
    echo "kept: $settings, $credentials/, $state_dir as $current left it"
    # A new version that crash-looped is failed, or activating between its restarts.
    restart_when active activating reloading failed
}

# The accounts to remove: those $accounts names; an earlier installer's (no such file) always
# created both.
created_accounts() {
    if [ -f "$accounts" ]; then
        cat "$accounts"
    else
        printf '%s\n' user group
    fi
}

group_id() {
    if [ -n "$root" ]; then
        awk -F: -v name="$SERVICE_USER" '$1 == name { print $3 }' "$root/etc/group"
    else
        getent group "$SERVICE_USER" | cut -d: -f3
    fi
}

# Removes the accounts $1 names (created_accounts, read before /opt went).
remove_accounts() {
    local created=$1 prefix kept_gid=""
    mapfile -t prefix < <(user_tool_args)
    if ! grep -qx group <<<"$created" && group_exists; then
        kept_gid=$(group_id)
    fi
    if grep -qx user <<<"$created" && user_exists; then
        userdel "${prefix[@]}" "$SERVICE_USER" \
            || fail "userdel $SERVICE_USER failed (above); everything else is removed: run --uninstall again once fixed"
    elif user_exists; then
        echo "kept the user $SERVICE_USER: it existed before the install"
    fi
    # With USERGROUPS_ENAB (login.defs) userdel also removes the user's group when no one else is
    # in it, even one that existed before the install: that one is put back with its ID.
    if [ -n "$kept_gid" ] && ! group_exists; then
        groupadd "${prefix[@]}" --gid "$kept_gid" "$SERVICE_USER" \
            || fail "groupadd --gid $kept_gid $SERVICE_USER failed (above): userdel removed that group, which existed before the install"
    fi
    # userdel removes the group itself only where login.defs says USERGROUPS_ENAB (not --prefix).
    if grep -qx group <<<"$created" && group_exists; then
        groupdel "${prefix[@]}" "$SERVICE_USER" \
            || fail "groupdel $SERVICE_USER failed (above; another user's primary group?); everything else is removed"
    elif group_exists; then
        echo "kept the group $SERVICE_USER: it existed before the install"
    fi
}

uninstall_all() {
    if systemd_running; then
        systemctl disable --now "$UNIT_NAME" 2>/dev/null || true
    fi
    local created
    created=$(created_accounts)
    rm -f "$wants_link" "$unit_path"
    # Its drop-ins name credential files removed below: kept, they would fail the next install's start.
    if [ -d "$dropins" ]; then
        rm -rf "$dropins"
        echo "removed the unit's drop-ins: $dropins"
    fi
    rm -rf "$opt_dir" "$etc_dir"
    if systemd_running; then
        systemctl daemon-reload
    fi
    remove_accounts "$created"
    if [ "$purge" = true ]; then
        rm -rf "$state_dir"
        echo "uninstalled, state directory $state_dir removed"
    else
        echo "uninstalled; kept the state directory $state_dir (audit trail, outboxes): --purge removes it"
    fi
}

case "$action" in
    uninstall) uninstall_all ;;
    rollback) rollback ;;
    *) install_all ;;
esac
