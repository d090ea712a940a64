"""The progress bus: wakes subscribers and runners. It is never the truth.

Delivery is at-most-once: a subscriber that may have missed something is told
so (``get`` returns ``None``) and reads the gap back from ``progress_events``.
"""

from initflow.bus.base import BusSubscription, ProgressBus, Relay

__all__ = ["BusSubscription", "ProgressBus", "Relay"]
