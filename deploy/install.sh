#!/usr/bin/env bash
# Install or update crf-daq on Debian or Raspberry Pi OS from this checkout. Run as root:
#
#   sudo deploy/install.sh [--dry-run] [--site-address ADDRESS|none] [--root DIR]
#
# Each step is taken only if needed, so a second run changes nothing and says so:
#   - Debian packages python3-venv, mosquitto, mosquitto-clients
#   - the system user crf (group crf; also in dialout, for the serial adapters)
#   - /opt/crf-daq: a virtual environment with this checkout installed in it
#   - /etc/crf/station.toml from config/station.example.toml and /etc/crf/sequences/
#     from config/sequences/, if absent: an edited station file is never overwritten
#   - /etc/systemd/system/crf-daemon.service, enabled but not started: edit the
#     station file first, then `systemctl start crf-daemon`
#   - /etc/udev/rules.d/99-crf-serial.rules (FTDI latency timer, replaced on updates)
#     and 99-crf-names.rules (/dev/crf/* names: installed once, then the site's)
#   - mosquitto: /etc/mosquitto/conf.d/crf.conf (loopback listener; the site LAN one
#     with --site-address; TLS on 8883 when /etc/mosquitto/certs/ holds ca.crt,
#     server.crt and server.key), /etc/mosquitto/crf.acl for the station id of the
#     station file, /etc/mosquitto/crf.passwd with the accounts station, operator and
#     metrology (new passwords are printed once), and the station's password in the
#     station file's [mqtt] password_file (default /etc/crf/mqtt.password)
#
# Options:
#   --dry-run               print what would change; change nothing
#   --site-address ADDRESS  this machine's address on the site LAN, where the broker
#                           listens too; remembered in /etc/crf/install.conf
#                           (`none`: loopback only again)
#   --root DIR              install under DIR instead of / (to try the script, or to
#                           look at the files): no packages, user, ownerships or
#                           service manager; the venv there only runs from DIR
# Environment:
#   CRF_MQTT_PASSWORD_STATION, CRF_MQTT_PASSWORD_OPERATOR, CRF_MQTT_PASSWORD_METROLOGY
#                 passwords for accounts still to create (else they are generated)
#   CRF_PIP_ARGS  more pip install arguments, e.g. "--no-index --find-links /media/usb/wheels"
#                 on a site without internet
#   CRF_PYTHON    the interpreter of the venv (default /usr/bin/python3, 3.11 or later)
# Exit status: 0 done (or nothing to do), 1 a step failed, 2 bad usage or input.
set -Eeuo pipefail
umask 022
trap 'echo "install.sh: failed (line $LINENO): $BASH_COMMAND" >&2; exit 1' ERR

readonly VENV=/opt/crf-daq
readonly ETC=/etc/crf
readonly ACCOUNTS=(station operator metrology)
readonly PACKAGES=(python3-venv mosquitto mosquitto-clients)
checkout=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${CRF_PYTHON:-/usr/bin/python3}
read -r -a pip_args <<< "${CRF_PIP_ARGS:-}"

usage() { sed -n '2,/^# Exit status/s/^# \{0,1\}//p' "$0"; }
die() { echo "install.sh: $*" >&2; exit 2; }

dry_run=0 root="" site_address="" site_address_given=0
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) dry_run=1 ;;
        --root) [ $# -ge 2 ] || die "--root needs a directory"; root=$2; shift ;;
        --root=*) root=${1#*=} ;;
        --site-address) [ $# -ge 2 ] || die "--site-address needs an address (or none)"
                        site_address=$2; site_address_given=1; shift ;;
        --site-address=*) site_address=${1#*=}; site_address_given=1 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done
if [ -n "$root" ]; then
    root=$(realpath -m "$root")
    [ "$root" != / ] || root=""
fi
if [ "$site_address_given" -eq 1 ] && [ "$site_address" != none ] &&
   ! [[ $site_address =~ ^[A-Za-z0-9][A-Za-z0-9.:-]*$ ]]; then
    die "--site-address '$site_address' is not an address (e.g. 192.168.50.10), nor none"
fi
[ -n "$root" ] || [ "$(id -u)" -eq 0 ] || die "run as root (sudo), or try it out with --root DIR"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
    die "$python is not Python 3.11 or later (set CRF_PYTHON)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
changes=0
restart_mosquitto=0 reload_mosquitto=0 reload_systemd=0 reload_udev=0
new_station_file=0 new_daemon=0
passwords_to_show=()

# --- helpers -----------------------------------------------------------------------

live() { [ "$dry_run" -eq 0 ]; }
system() { [ -z "$root" ]; }  # the real system, not a --root tree
systemd_running() { system && [ -d /run/systemd/system ]; }

# change WHAT: one change, made now (or only announced, with --dry-run).
change() {
    changes=$((changes + 1))
    if live; then echo "  $*"; else echo "  would $*"; fi
}

# state PATH: its mode, and its owners on the real system (a --root tree has no users);
# wanted_state MODE GROUP: the same for this mode and root:GROUP.
state() {
    if system; then stat -c '%a %U:%G' "$1"; else stat -c '%a' "$1"; fi
}
wanted_state() {
    if system; then echo "$1 root:$2"; else echo "$1"; fi
}

# ensure_state PATH MODE GROUP: owner root, this group and mode.
ensure_state() {
    local path=$1 mode=$2 group=$3
    [ -e "$root$path" ] || return 0
    [ "$(state "$root$path")" != "$(wanted_state "$mode" "$group")" ] || return 0
    change "set $path to mode $mode, owner root:$group"
    if live; then
        chmod "$mode" "$root$path"
        if system; then chown "root:$group" "$path"; fi
    fi
}

# put SOURCE PATH MODE GROUP: install SOURCE as PATH unless PATH already is just that.
# Returns 0 if it changed PATH (or would have), 1 if PATH was right already.
put() {
    local source=$1 path=$2 mode=$3 group=$4
    if [ -f "$root$path" ] && cmp -s "$source" "$root$path" &&
       [ "$(state "$root$path")" = "$(wanted_state "$mode" "$group")" ]; then
        return 1
    fi
    if [ -f "$root$path" ]; then change "update $path"; else change "install $path"; fi
    if live; then
        install -D -m "$mode" "$source" "$root$path"
        if system; then chown "root:$group" "$path"; fi
    fi
    return 0
}

# seed SOURCE PATH MODE GROUP: install SOURCE as PATH only if there is no PATH yet.
seed() {
    local source=$1 path=$2 mode=$3 group=$4
    [ ! -e "$root$path" ] || return 1
    change "install $path (from ${source#"$checkout"/}; yours from now on)"
    if live; then
        install -D -m "$mode" "$source" "$root$path"
        if system; then chown "root:$group" "$path"; fi
    fi
    return 0
}

# directory PATH MODE GROUP
directory() {
    local path=$1 mode=$2 group=$3
    if [ ! -d "$root$path" ]; then
        change "create $path/"
        if live; then
            install -d -m "$mode" "$root$path"
            if system; then chown "root:$group" "$path"; fi
        fi
    else
        ensure_state "$path" "$mode" "$group"
    fi
}

# A value of the station file (a dotted key: mqtt.password_file), empty if it has none.
station_value() {
    "$python" - "$1" "$2" <<'PY'
import sys
import tomllib

path, key = sys.argv[1], sys.argv[2]
try:
    with open(path, "rb") as file:
        value = tomllib.load(file)
except (OSError, tomllib.TOMLDecodeError) as error:
    sys.exit(f"install.sh: cannot read {path}: {error}")
for part in key.split("."):
    value = value.get(part) if isinstance(value, dict) else None
print(value if isinstance(value, str) else "")
PY
}

new_password() { "$python" -c 'import secrets; print(secrets.token_urlsafe(18))'; }

# set_mqtt_password ACCOUNT PASSWORD: add or change an account of crf.passwd (the
# password goes through stdin, never onto a command line).
set_mqtt_password() {
    local file=$root/etc/mosquitto/crf.passwd create=()
    [ -f "$file" ] || create=(-c)
    printf '%s\n%s\n' "$2" "$2" | mosquitto_passwd "${create[@]}" "$file" "$1" >/dev/null
    chmod 640 "$file"
    if system; then chown root:mosquitto "$file"; fi
}

# The checkout's package source, for "is the venv's crf-daq this one?"
source_fingerprint() {
    (cd "$checkout" &&
     find pyproject.toml README.md acquisition drivers simulators -type f \
          ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 |
         LC_ALL=C sort -z | xargs -0 sha256sum
     echo "pip arguments: ${pip_args[*]}") | sha256sum | cut -d' ' -f1
}

# --- the steps -----------------------------------------------------------------------

dry_note=""
live || dry_note=" (dry run: nothing is changed)"
echo "crf-daq: installing from $checkout${root:+ into $root}$dry_note"

# Debian packages
missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' ||
        missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    if system; then
        change "apt-get install ${missing[*]}"
        if live; then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                "${missing[@]}" >/dev/null
        fi
    else
        echo "  not here (--root): the system lacks Debian packages ${missing[*]}"
    fi
fi

# The daemon's user: its own group crf, and dialout for the serial adapters.
if system; then
    if ! getent passwd crf >/dev/null; then
        change "create system user crf (groups crf, dialout)"
        if live; then
            useradd --system --user-group --groups dialout --home-dir /var/lib/crf \
                --no-create-home --shell /usr/sbin/nologin --comment "crf-daq daemon" crf
        fi
    elif ! id -nG crf | tr ' ' '\n' | grep -qx dialout; then
        change "add user crf to group dialout"
        if live; then usermod -aG dialout crf; fi
    fi
fi

# The package, in its own virtual environment.
if [ ! -x "$root$VENV/bin/python" ]; then
    change "create the virtual environment $VENV"
    if live; then "$python" -m venv "$root$VENV"; fi
fi
fingerprint=$(source_fingerprint)
if [ "$(cat "$root$VENV/.crf-source" 2>/dev/null)" != "$fingerprint" ]; then
    change "install crf-daq from this checkout into $VENV"
    new_daemon=1
    if live; then
        # From a copy: building in the checkout would leave build/ and egg-info there.
        mkdir "$work/source"
        tar -C "$checkout" --exclude=__pycache__ --exclude='*.pyc' -cf - \
            pyproject.toml README.md acquisition drivers simulators | tar -C "$work/source" -xf -
        "$root$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            "${pip_args[@]}" "$work/source"
        echo "$fingerprint" > "$root$VENV/.crf-source"
    fi
fi

# The station file and sequences: the example once, then the site's own.
directory "$ETC" 750 crf
if seed "$checkout/config/station.example.toml" "$ETC/station.toml" 640 crf; then
    new_station_file=1
fi
if [ ! -d "$root$ETC/sequences" ]; then
    directory "$ETC/sequences" 750 crf
    for sequence in "$checkout"/config/sequences/*.toml; do
        seed "$sequence" "$ETC/sequences/${sequence##*/}" 640 crf || true
    done
fi
station_file=$root$ETC/station.toml
[ -f "$station_file" ] || station_file=$checkout/config/station.example.toml  # dry run
station=$(station_value "$station_file" station) || exit 2
[[ $station =~ ^[A-Za-z0-9_.-]+$ ]] ||
    die "station id '$station' in $ETC/station.toml: letters, digits, _ . - only"
station_password_file=$(station_value "$station_file" mqtt.password_file) || exit 2
station_password_file=${station_password_file:-$ETC/mqtt.password}
[[ $station_password_file == /* ]] || station_password_file=$ETC/$station_password_file

# Remembered options.
if [ "$site_address_given" -eq 0 ] && [ -f "$root$ETC/install.conf" ]; then
    site_address=$(sed -n 's/^site_address=//p' "$root$ETC/install.conf")
fi
[ "$site_address" != none ] || site_address=""
printf '# deploy/install.sh options, used again by its next runs\nsite_address=%s\n' \
    "${site_address:-none}" > "$work/install.conf"
put "$work/install.conf" "$ETC/install.conf" 644 root || true

# The service.
if put "$checkout/systemd/crf-daemon.service" /etc/systemd/system/crf-daemon.service 644 root
then
    reload_systemd=1 new_daemon=1
fi
in_root=()
[ -z "$root" ] || in_root=(--root="$root")
if [ "$(systemctl "${in_root[@]}" is-enabled crf-daemon.service 2>/dev/null)" != enabled ]; then
    change "enable crf-daemon.service (started at boot)"
    if live; then systemctl "${in_root[@]}" --quiet enable crf-daemon.service; fi
fi

# udev: the latency timer, and the site's names for its adapters.
if put "$checkout/systemd/99-crf-serial.rules" /etc/udev/rules.d/99-crf-serial.rules 644 root
then
    reload_udev=1
fi
if seed "$checkout/systemd/99-crf-names.rules" /etc/udev/rules.d/99-crf-names.rules 644 root
then
    reload_udev=1
fi

# mosquitto: listeners, ACL for this station, accounts.
tls=0
if [ -n "$site_address" ] && [ -f "$root/etc/mosquitto/certs/ca.crt" ] &&
   [ -f "$root/etc/mosquitto/certs/server.crt" ] && [ -f "$root/etc/mosquitto/certs/server.key" ]
then
    tls=1
fi
{
    echo "# Made by deploy/install.sh from systemd/mosquitto/crf.conf (site LAN:" \
         "${site_address:-none}; TLS: $([ "$tls" -eq 1 ] && echo on || echo off))."
    echo "# Run it again rather than edit this file; add settings of your own in another file."
    awk -v address="$site_address" -v tls="$tls" '
        /^# site-lan: begin/ { skip = (address == ""); next }
        /^# site-tls: begin/ { skip = (address == "" || !tls); next }
        /^# site-(lan|tls): end/ { skip = 0; next }
        !skip { gsub(/192\.168\.50\.10/, address); print }
    ' "$checkout/systemd/mosquitto/crf.conf"
} > "$work/crf.conf"
if put "$work/crf.conf" /etc/mosquitto/conf.d/crf.conf 644 root; then restart_mosquitto=1; fi
sed "s/@STATION@/$station/g" "$checkout/systemd/mosquitto/crf.acl.template" > "$work/crf.acl"
if put "$work/crf.acl" /etc/mosquitto/crf.acl 640 mosquitto; then reload_mosquitto=1; fi

for account in "${ACCOUNTS[@]}"; do
    given_variable=CRF_MQTT_PASSWORD_${account^^}
    given=${!given_variable:-}
    has_account=0
    grep -q "^$account:" "$root/etc/mosquitto/crf.passwd" 2>/dev/null && has_account=1
    if [ "$account" = station ]; then  # the daemon's: kept in its password file
        if [ "$has_account" -eq 1 ] && [ -f "$root$station_password_file" ]; then continue; fi
        if [ -f "$root$station_password_file" ]; then
            change "add MQTT account station, with the password in $station_password_file"
            password=$(cat "$root$station_password_file")
        else
            if [ "$has_account" -eq 1 ]; then
                change "set a new password for MQTT account station and put it in" \
                       "$station_password_file (there was none)"
            else
                change "add MQTT account station, its password in $station_password_file"
            fi
            password=${given:-$(new_password)}
            if live; then  # its mode first, then the secret
                install -D -m 640 /dev/null "$root$station_password_file"
                if system; then chown root:crf "$station_password_file"; fi
                printf '%s\n' "$password" > "$root$station_password_file"
            fi
        fi
    else
        [ "$has_account" -eq 0 ] || continue
        change "add MQTT account $account"
        password=${given:-$(new_password)}
        [ -n "$given" ] || passwords_to_show+=("$account: $password")
    fi
    if live; then set_mqtt_password "$account" "$password"; fi
    reload_mosquitto=1
done
ensure_state /etc/mosquitto/crf.passwd 640 mosquitto

# Tell the services what changed.
if [ "$reload_systemd" -eq 1 ] && systemd_running; then
    change "reload systemd (daemon-reload)"
    if live; then systemctl daemon-reload; fi
fi
if [ "$reload_udev" -eq 1 ] && system && [ -S /run/udev/control ]; then
    change "reload the udev rules and apply them to the serial adapters"
    if live; then
        udevadm control --reload
        udevadm trigger --action=add --subsystem-match=usb-serial --subsystem-match=tty
    fi
fi
if system && [ "$(systemctl is-enabled mosquitto.service 2>/dev/null)" != enabled ]; then
    change "enable mosquitto.service"
    if live; then systemctl --quiet enable mosquitto.service; fi
fi
if systemd_running; then
    if [ "$restart_mosquitto" -eq 1 ]; then
        change "restart mosquitto (new listeners)"
        if live; then systemctl restart mosquitto.service; fi
    elif [ "$reload_mosquitto" -eq 1 ]; then
        change "reload mosquitto (accounts or ACL)"
        if live; then systemctl reload-or-restart mosquitto.service; fi
    fi
elif [ $((restart_mosquitto + reload_mosquitto + reload_systemd)) -gt 0 ] && system; then
    echo "  not here: systemd is not running, so no service was reloaded or restarted"
fi

# --- what now --------------------------------------------------------------------------

if [ "$changes" -eq 0 ]; then
    echo "nothing to change: crf-daq is installed as this checkout has it"
    exit 0
fi
if ! live; then
    echo "$changes change(s) to make; nothing was changed (dry run)"
    exit 0
fi
echo "done: $changes change(s)"
if [ ${#passwords_to_show[@]} -gt 0 ]; then
    echo "New MQTT passwords, shown this once: keep them now."
    printf '  %s\n' "${passwords_to_show[@]}"
fi
if [ "$new_station_file" -eq 1 ]; then
    echo "Next: edit $ETC/station.toml (devices, ports: see the udev names in"
    echo "  /etc/udev/rules.d/99-crf-names.rules), check it, then start the daemon:"
    echo "  $VENV/bin/crf check-config $ETC/station.toml && systemctl start crf-daemon"
elif [ "$new_daemon" -eq 1 ] && systemd_running && systemctl --quiet is-active crf-daemon
then
    echo "The daemon still runs the old version: systemctl restart crf-daemon"
    echo "  (a run in progress is aborted, and every device made safe)"
fi
