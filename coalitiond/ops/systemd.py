"""systemd notify protocol (sd_notify(3)), without libsystemd.

A datagram of newline-separated `KEY=VALUE` assignments to the AF_UNIX socket named by
`$NOTIFY_SOCKET` (a path, or an abstract name starting with '@'). Without the variable every
call is a no-op, so the daemon behaves the same outside systemd.

The watchdog interval comes from `$WATCHDOG_USEC` (and `$WATCHDOG_PID`, which must be ours);
we ping at half of it, as sd_watchdog_enabled(3) recommends.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None
        if not address:
            self._address = None
        elif address.startswith("@"):
            self._address = b"\0" + address[1:].encode()
        else:
            self._address = address
        self.watchdog_interval_s: float | None = None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if usec and usec.isdigit() and int(usec) > 0 and (pid is None or pid == str(os.getpid())):
            self.watchdog_interval_s = int(usec) / 1_000_000 / 2

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, **assignments: str) -> bool:
        """Send e.g. `notify(READY="1", STATUS="...")`. Returns whether a datagram was sent."""
        if self._address is None:
            return False
        message = "\n".join(f"{k}={v}" for k, v in assignments.items()).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.sendto(message, self._address)
            except OSError:
                # The manager went away; the daemon's job does not depend on it.
                return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify(READY="1", STATUS=status) if status else self.notify(READY="1")

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG="1")

    def stopping(self) -> bool:
        return self.notify(STOPPING="1")

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)
