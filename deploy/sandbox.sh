#!/usr/bin/env bash
# Run a command as root in a throwaway copy of this machine, to try deploy/install.sh for
# real without touching the machine (tests/test_deploy.py does):
#
#   sudo deploy/sandbox.sh DIR COMMAND [ARGUMENT...]
#
# The command runs in a mount namespace where /etc, /opt and /var are overlays whose
# changes land in DIR/changes/ (and go nowhere else), /run is empty (no systemd, no udev
# daemon to reach), and in a network namespace of its own with only a loopback interface.
# DIR must not be under /etc, /opt, /var or /run. Exit status: the command's; 2 bad usage.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: deploy/sandbox.sh DIR COMMAND [ARGUMENT...]" >&2
    exit 2
fi
[ "$(id -u)" -eq 0 ] || { echo "sandbox.sh: run as root (sudo)" >&2; exit 2; }
dir=$(realpath -m "$1")
shift
case $dir/ in
    /etc/*|/opt/*|/var/*|/run/*) echo "sandbox.sh: DIR must lie outside /etc /opt /var /run" >&2
                                 exit 2 ;;
esac
for layer in etc opt var; do
    mkdir -p "$dir/changes/$layer" "$dir/overlay-work/$layer"
done

# shellcheck disable=SC2016  # the inner shell expands them
exec unshare --mount --net --propagation private bash -euo pipefail -c '
    dir=$1
    shift
    for layer in etc opt var; do
        mount -t overlay "sandbox-$layer" "/$layer" \
            -o "lowerdir=/$layer,upperdir=$dir/changes/$layer,workdir=$dir/overlay-work/$layer"
    done
    mount -t tmpfs sandbox-run /run
    ip link set lo up
    exec "$@"
' sandbox "$dir" "$@"
