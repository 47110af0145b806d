#!/usr/bin/env bash
# Installs the telehealth agent on a kiosk or cart as the systemd service kiosk.service:
#   /opt/telehealth-agent/venv                     the agent alone (this repository's root package;
#                                                  never devstack/) in its own virtual environment
#   /etc/systemd/system/kiosk.service              the hardened unit (kiosk.service of this repository)
#   /etc/telehealth-agent/agent.toml               example settings (packaging/agent.toml), 0644
#   /etc/telehealth-agent/credentials/<name>       one file per secret, root-owned 0600: placeholders,
#                                                  but api_token, which is generated here
#   the system user "telehealth"                   no home, no shell, no password
# Then it prints what is left to fill in and the command that starts the service.
#
# Usage: sudo scripts/install-kiosk.sh [--root DIR] [--wheel FILE]
#        sudo scripts/install-kiosk.sh --uninstall [--purge] [--root DIR]
#   --root DIR    install into DIR instead of / (tests, images). The user is added with
#                 `useradd --prefix DIR` when DIR/etc/passwd exists, and only printed otherwise;
#                 systemctl is never run.
#   --wheel FILE  install this built wheel of the agent instead of building the repository root
#                 (offline installs; pip's own PIP_* variables apply as usual)
#   --uninstall   stop and remove all of the above but the state directory /var/lib/telehealth-agent
#   --purge       with --uninstall: the state directory too (the audit trail and outboxes)
# Safe to run twice: the settings and credential files are never overwritten once they exist,
# the unit is rewritten with the same content, and the user is added only if missing.
# Exit codes: 0 done, 1 a step failed, 2 usage error or not run as root. PYTHON picks the Python
# (3.11 or newer) of the virtual environment; default python3.
set -euo pipefail

readonly UNIT_NAME=kiosk.service
readonly SERVICE_USER=telehealth
readonly PLACEHOLDER_MARK="FILL-IN"
# One secret per line: name, then what to put in its file (the unit's LoadCredential= lines).
readonly SECRETS="publish_key|the PubNub publish key of the kiosk keyset
subscribe_key|the PubNub subscribe key of the kiosk keyset
cipher_key|the AES-256 cipher key of every PHI channel (at least 16 characters)
device_credential|this kiosk's device credential for the clinic backend"

repo=$(cd "$(dirname "$0")/.." && pwd)
root=""
wheel=""
action=install
purge=false

fail_usage() {
    echo "install-kiosk.sh: $1" >&2
    exit 2
}

case " $* " in
    *" -h "*|*" --help "*) sed -n '2,25p' "$0"; exit 0 ;;
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
        --uninstall) action=uninstall; shift ;;
        --purge) purge=true; shift ;;
        *) fail_usage "unknown argument: $1 (see --help)" ;;
    esac
done
if [ "$purge" = true ] && [ "$action" != uninstall ]; then
    fail_usage "--purge goes with --uninstall"
fi

readonly opt_dir="$root/opt/telehealth-agent"
readonly venv="$opt_dir/venv"
readonly unit_path="$root/etc/systemd/system/$UNIT_NAME"
readonly wants_link="$root/etc/systemd/system/multi-user.target.wants/$UNIT_NAME"
readonly etc_dir="$root/etc/telehealth-agent"
readonly settings="$etc_dir/agent.toml"
readonly credentials="$etc_dir/credentials"
readonly state_dir="$root/var/lib/telehealth-agent"

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

install_agent() {
    local python=${PYTHON:-python3}
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { echo "install-kiosk.sh: $python is older than 3.11 (set PYTHON)" >&2; exit 1; }
    install -d -m 0755 -o root -g root "$opt_dir"
    if [ ! -x "$venv/bin/python" ]; then
        "$python" -m venv "$venv"
    fi
    # The repository root is the agent alone; devstack/ is a separate package it never installs.
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "${wheel:-$repo}"
    install -m 0644 -o root -g root "$repo/README.md" "$opt_dir/README.md"
}

install_unit() {
    install -d -m 0755 "$root/etc/systemd/system"
    install -m 0644 -o root -g root "$repo/kiosk.service" "$unit_path"
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

add_user() {
    if user_exists; then
        return 0
    fi
    local args=(--system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin)
    if ! user_files_present; then
        echo "user: $root/etc/passwd does not exist; on the target it runs: useradd ${args[*]} $SERVICE_USER"
        return 0
    fi
    local prefix
    mapfile -t prefix < <(user_tool_args)
    useradd "${prefix[@]}" "${args[@]}" "$SERVICE_USER"
}

print_todo() {
    local left=() key name
    for key in user_id organization_id department_id clinic_url; do
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
    install_agent
    install_unit
    install_settings
    add_user
    if systemd_running; then
        systemctl daemon-reload
    fi
    print_todo
}

uninstall_all() {
    if systemd_running; then
        systemctl disable --now "$UNIT_NAME" 2>/dev/null || true
    fi
    rm -f "$wants_link" "$unit_path"
    rm -rf "$opt_dir" "$etc_dir"
    if systemd_running; then
        systemctl daemon-reload
    fi
    if user_exists; then
        local prefix
        mapfile -t prefix < <(user_tool_args)
        userdel "${prefix[@]}" "$SERVICE_USER"
    fi
    if [ "$purge" = true ]; then
        rm -rf "$state_dir"
        echo "uninstalled, state directory $state_dir removed"
    else
        echo "uninstalled; kept the state directory $state_dir (audit trail, outboxes): --purge removes it"
    fi
}

if [ "$action" = uninstall ]; then
    uninstall_all
else
    install_all
fi
