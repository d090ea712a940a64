"""Child processes whose output a test reads as it comes: through pipes or a pseudo-terminal.

A reader thread drains the output as it arrives (a child never blocks on a full pipe or
pty buffer); ``expect`` waits — with a deadline, never a bare sleep — until a pattern
shows up in the output with terminal escape codes removed.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import os
import re
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Mapping, Sequence

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# The live view redraws its block after moving the cursor up over the previous frame.
FRAME_START = re.compile(r"\x1b\[\d+A")


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


class Output:
    """Text collected by a reader thread, with a condition to wait on."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._closed = False
        self._changed = threading.Condition()

    def feed(self, text: str) -> None:
        with self._changed:
            self._parts.append(text)
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    @property
    def raw(self) -> str:
        with self._changed:
            return "".join(self._parts)

    @property
    def text(self) -> str:
        return strip_ansi(self.raw)

    def expect(
        self, pattern: str | re.Pattern[str], *, timeout: float, what: str = ""
    ) -> re.Match[str]:
        """Wait until ``pattern`` matches the (escape-free) output; return the match."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = regex.search(strip_ansi("".join(self._parts)))
                if match:
                    return match
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    tail = strip_ansi("".join(self._parts))[-3000:]
                    state = "output ended" if self._closed else f"timed out after {timeout:.0f} s"
                    raise AssertionError(
                        f"{state} waiting for {what or regex.pattern!r}; output so far:\n{tail}"
                    )
                self._changed.wait(min(left, 0.5))


def _drain(fd: int, output: Output) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the pty's other side closed
            chunk = b""
        if not chunk:
            break
        output.feed(decoder.decode(chunk))
    output.feed(decoder.decode(b"", final=True))
    output.close()


class PipedChild:
    """A child with stdout and stderr on pipes (not a terminal)."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.process = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self.stdout = Output()
        self.stderr = Output()
        self._threads = [
            threading.Thread(target=_drain, args=(self.process.stdout.fileno(), self.stdout)),
            threading.Thread(target=_drain, args=(self.process.stderr.fileno(), self.stderr)),
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=5)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def _take_terminal() -> None:
    """In the child, after setsid(): make the pty (stdin) the controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtyChild:
    """A child whose stdin, stdout and stderr are a pseudo-terminal, as in a real shell.

    The pty is the child's controlling terminal, so ``ctrl_c`` (a ``\\x03`` typed into
    it) makes the terminal driver send SIGINT to the child, exactly as a keyboard would.
    """

    def __init__(
        self, argv: Sequence[str], env: Mapping[str, str], *, rows: int = 40, columns: int = 120
    ) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.master = master
        self.process = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=_take_terminal,  # noqa: PLW1509 (the test process has no other threads yet)
        )
        os.close(slave)
        self.output = Output()
        self._thread = threading.Thread(target=_drain, args=(master, self.output), daemon=True)
        self._thread.start()

    def ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def frames(self) -> list[str]:
        """The live view's successive frames, escape codes removed."""
        return [strip_ansi(part) for part in FRAME_START.split(self.output.raw)]

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        self._thread.join(timeout=5)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            os.close(self.master)
