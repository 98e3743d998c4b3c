"""What the API knows of the store's identity, for readiness (ADR 0008).

The store carries an identity marker (`FeatureStore.identity()`): a random id created once.
The API remembers the id it first saw (creating the marker when the store has none at that
first contact: a store nobody initialised yet) and, at each readiness probe, compares:

- marker gone: the store **lost its data** (wiped, or another, empty store behind the URL);
- marker state `filling`: a refill is under way (the flow or `oo-features refill`);
- marker `ready` with another id: a refilled or replaced store that is complete; adopted.

An API (re)started after a wipe cannot tell (its first contact initialises the marker); the
flow can, from its recovery directory, and marks the store `filling` while it refills.
"""

from __future__ import annotations

import threading

from connectors.store.base import IDENTITY_FILLING, FeatureStore
from serving.metrics import Metrics

LOST = "lost its data"
REFILLING = "refilling"


class StoreIdentityWatch:
    def __init__(self, metrics: Metrics | None = None) -> None:
        self.known: str | None = None
        self._metrics = metrics
        self._lock = threading.Lock()

    def check(self, store: FeatureStore) -> str:
        """`ok`, or `lost its data: ...` / `refilling: ...`; raises `StoreError` if unreachable."""
        marker = store.identity()
        with self._lock:
            if marker is None:
                if self.known is None:
                    marker = store.create_identity()
                else:
                    return self._observe(
                        f"{LOST}: its identity marker {self.known} is gone (wiped, or another "
                        "store behind the URL); restart the flow or run `oo-features refill`"
                    )
            if marker.state == IDENTITY_FILLING:
                return self._observe(
                    f"{REFILLING}: store {marker.id} lost its data and is being refilled"
                )
            self.known = marker.id
            return self._observe("ok")

    def _observe(self, state: str) -> str:
        if self._metrics is not None:
            self._metrics.store_lost.set(1 if state.startswith(LOST) else 0)
            self._metrics.store_refilling.set(1 if state.startswith(REFILLING) else 0)
        return state
