"""Per-user token buckets for expensive actions (creating projects).

In-process: with several instances each enforces its own bucket, so the
effective limit is per instance; that bounds abuse without a shared store.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from initflow.errors import InvalidInput


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    per_minute: float
    burst: int
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, key: str, field_path: list[str]) -> None:
        """Spend one token for ``key`` or raise a userError saying when to try again."""
        now = time.monotonic()
        bucket = self._buckets.setdefault(key, _Bucket(float(self.burst), now))
        rate = self.per_minute / 60.0
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens < 1.0:
            wait = math.ceil((1.0 - bucket.tokens) / rate) if rate > 0 else 60
            raise InvalidInput.one(
                field_path,
                f"Too many projects created in a short time; try again in {wait} s.",
                "RATE_LIMITED",
            )
        bucket.tokens -= 1.0
