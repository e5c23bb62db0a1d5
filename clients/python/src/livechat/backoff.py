"""Reconnect delays: exponential, capped, with full jitter (a random delay between 0 and the
exponential bound), so that clients dropped together by one restart do not come back together."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """The delay before reconnect attempt `n` (0 first) is uniform in
    [`minimum`, min(`maximum`, `initial` * `factor` ** n)]."""

    initial: float = 0.5
    maximum: float = 10.0
    factor: float = 2.0
    minimum: float = 0.05
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.minimum <= self.initial <= self.maximum or self.factor < 1:
            raise ValueError("expected 0 <= minimum <= initial <= maximum and factor >= 1")

    def bound(self, attempt: int) -> float:
        """The largest delay of attempt `attempt`."""
        return min(self.maximum, self.initial * self.factor ** min(attempt, 64))

    def delay(self, attempt: int) -> float:
        return self.rng.uniform(self.minimum, self.bound(attempt))
