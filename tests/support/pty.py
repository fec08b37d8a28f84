"""A command in a real pseudo-terminal, started without forking the test process.

pexpect.spawn forks the pytest process itself (pty.fork). That process holds gRPC channels and
servers from other tests, and gRPC's fork handlers can then hang the fork (grpc/grpc#31885:
seen in CI as a spawn that never returned). subprocess starts children with vfork and exec,
which runs no fork handlers, so the pseudo-terminal is made here and handed to the child:
``setsid --ctty`` makes it the child's controlling terminal, so ^C raises SIGINT as at a shell.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import termios
from collections.abc import Sequence

from pexpect.fdpexpect import fdspawn


class PtyChild(fdspawn):
    """``pexpect`` over the terminal of a child process (``proc``); ``exitstatus`` is set
    by ``close``."""

    def __init__(self, master_fd: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
        super().__init__(master_fd, timeout=timeout, encoding="utf-8", codec_errors="replace")
        self.proc = proc

    def sendintr(self) -> None:
        """Types ^C, as a user at the terminal would."""
        self.send("\x03")

    def isalive(self) -> bool:
        return self.proc.poll() is None

    def close(self, force: bool = True) -> None:
        """Kills the child if it still runs (``force``), waits for it and closes the terminal."""
        if force and self.proc.poll() is None:
            self.proc.kill()
        self.exitstatus = self.proc.wait(timeout=10)
        if self.child_fd != -1:
            super().close()


def spawn_in_pty(
    argv: Sequence[str], *, rows: int, cols: int, env: dict[str, str], timeout: float
) -> PtyChild:
    """Starts ``argv`` on a new pseudo-terminal of ``rows`` x ``cols``."""
    master, slave = os.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        proc = subprocess.Popen(
            # ^C raises SIGINT even where the suite was started with it ignored (a background
            # job of a script: an ignored signal stays ignored through exec)
            ["env", "--default-signal=INT", "setsid", "--ctty", *argv],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            close_fds=True,
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return PtyChild(master, proc, timeout)
