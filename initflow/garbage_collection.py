"""Keep the cyclic garbage collector's pauses short in a long-running server.

Everything loaded at start-up (Strawberry, graphql-core, Tortoise, the schema)
is long-lived, yet every full collection scanned it again: pauses of up to
0.5 s under a few hundred subscriptions (``bench/stream.py``). Freezing the
start-up heap moves it out of the collector's sight; a larger young-generation
threshold makes collections rarer for a server that allocates per message.
"""

from __future__ import annotations

import gc

YOUNG_GENERATION_THRESHOLD = 10_000


def freeze_start_up_heap() -> None:
    """Call once, when start-up is done and before serving."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)
