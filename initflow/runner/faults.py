"""Named crash points, so crash tests can kill a real process at an exact place.

``INITFLOW_CRASH_AT=<step>:<point>`` (point: ``started``, ``mid`` or
``completed``) makes the process SIGKILL itself right after that point was
committed. Unset in production; it costs one comparison per point.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("initflow.faults")


class CrashPoints:
    def __init__(self, spec: str | None) -> None:
        self._spec = spec

    def reached(self, step: str, point: str) -> None:
        if self._spec is not None and self._spec == f"{step}:{point}":
            log.warning(
                "crash point %s:%s reached: killing this process",
                step,
                point,
                extra={"action": "crash_point", "step": step},
            )
            os.kill(os.getpid(), signal.SIGKILL)
