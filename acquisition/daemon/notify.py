"""systemd's notify protocol: READY=1, STOPPING=1, STATUS=..., WATCHDOG=1 to the service manager.

A notification is one datagram to the Unix socket named by $NOTIFY_SOCKET (a name starting
with '@' is in the abstract namespace), so it is written here rather than taken from a
package: PyPI's `sdnotify` has been unmaintained since 2017, and `systemd-python` builds
against libsystemd's headers, which a Raspberry Pi does not have by default. Outside
systemd (no $NOTIFY_SOCKET) nothing is sent at all.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


class SystemdNotifier:
    """Sends notifications to the service manager; a lost one is logged, never raised."""

    def __init__(self, address: str) -> None:
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._socket.setblocking(False)
        self._failing = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ
                         ) -> SystemdNotifier | None:
        """The notifier systemd asked for, or None when not run by systemd as Type=notify."""
        address = environ.get("NOTIFY_SOCKET", "")
        return cls(address) if address else None

    def send(self, *assignments: str) -> None:
        """One message of `VARIABLE=value` assignments (a STATUS stays on one line).

        A service manager that went away, or is too busy to read, must not stop the
        acquisition: the failure is logged once, until a message gets through again."""
        message = "\n".join(line.replace("\n", " ") for line in assignments)
        try:
            self._socket.sendto(message.encode(), self.address)
        except OSError as error:
            if not self._failing:
                log.warning("cannot notify systemd", socket=self.address.lstrip("\0"),
                            error=str(error))
            self._failing = True
        else:
            self._failing = False

    def close(self) -> None:
        self._socket.close()


def watchdog_interval_s(environ: Mapping[str, str] = os.environ) -> float | None:
    """How often to feed the watchdog: half of $WATCHDOG_USEC, as sd_watchdog_enabled(3)
    advises; None without a watchdog, or when $WATCHDOG_PID names another process."""
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None
