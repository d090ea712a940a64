"""The event loop the server processes run on: uvloop where it is installed.

Measured (``bench/runner_throughput.py``, ``bench/stream.py``): the stdlib
loop's selector, transports and callback handling were a fifth of the worker's
CPU and a quarter of each stream delivery; uvloop does the same work in C.
Behaviour is the same (tasks, cancellation and timeouts are asyncio's own), so
tests that run in-process on the stdlib loop cover the server's code paths.
``INITFLOW_EVENT_LOOP=asyncio`` falls back to the stdlib loop.
"""

from __future__ import annotations

import asyncio
import os


def use_fastest_loop() -> str:
    """Install uvloop's policy unless told otherwise; returns the loop in use."""
    if os.environ.get("INITFLOW_EVENT_LOOP", "uvloop") == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: PLC0415 - optional: pyproject installs it only where it builds
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"
