"""`oo-features refill`: refill a store that lost its data, from the log, tombstones first.

Also the flow's side of ADR 0008, used by `oo-features flow`:

- `prepare_flow_store` runs before the flow writes anything: it re-applies the durable
  tombstones (`connectors.tombstones`), then decides from the store's identity marker and the
  identity the recovery directory remembers whether the store lost its data; if so it marks
  the store `filling`, refills every user from the log and marks it `ready` again.
- `StoreWatchdog` checks the marker every second while the flow runs; when it is gone or is
  another store's, the flow marks the store `filling` and exits with `EXIT_STORE_LOST` (75) so
  its supervisor restarts it, and the restart refills (a running flow cannot rewrite its idle
  users: Bytewax calls a user's logic only when it has input).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connectors.store.base import FeatureStore

EXIT_STORE_LOST = 75
"""Exit code of a flow whose store lost its data while it ran (EX_TEMPFAIL): restart it."""

IDENTITY_FILE = "store-identity"
"""In the recovery directory: the id of the store the recovery state's writes went to."""

WATCH_INTERVAL_S = 1.0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "refill",
        help="refill a store that lost its data (wiped or replaced) from the Kafka log",
        description="Re-apply every durable tombstone (oo.tombstones.v1), mark the store "
        "'filling' (readiness says so), recompute every user from the whole signals and "
        "feedback topics, write each in full, mark the store 'ready'. Safe to run while the "
        "flow runs and to run again: writes are guarded by event time and tombstones.",
    )
    p.add_argument("--bootstrap", help="override OO_KAFKA_BOOTSTRAP")
    p.add_argument("--store-url", help="override OO_STORE_URL")
    p.add_argument("--topic-prefix", help="override OO_TOPIC_PREFIX")
    p.add_argument("--key-prefix", help="override OO_KEY_PREFIX")
    p.add_argument("-w", "--workers", type=int, default=1, help="worker threads")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def remembered_identity(recovery_dir: str | Path | None) -> str | None:
    if recovery_dir is None:
        return None
    path = Path(recovery_dir) / IDENTITY_FILE
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def remember_identity(recovery_dir: str | Path | None, identity_id: str) -> None:
    if recovery_dir is None:
        return
    path = Path(recovery_dir) / IDENTITY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(identity_id + "\n")
    os.replace(tmp, path)


def restore_tombstones(
    store: FeatureStore, *, bootstrap: str, topic_prefix: str, partitions: int, timeout_s: float
) -> int:
    """Read the whole tombstone topic and give the store the tombstones it lacks."""
    from connectors import tombstones

    tombstones.ensure_topic(
        bootstrap, topic_prefix=topic_prefix, partitions=partitions, timeout_s=timeout_s
    )
    known = tombstones.read_tombstones(
        bootstrap, topic_prefix=topic_prefix, timeout_s=max(timeout_s, 30.0)
    )
    return store.restore_tombstones(known)


def refill_from_log(
    *, store_url: str, key_prefix: str, bootstrap: str, topic_prefix: str, workers: int
) -> None:
    """Every user recomputed from the whole log and written in full (a batch run of the flow)."""
    from bytewax.run import cli_main

    from flows.features_flow import build_flow

    flow = build_flow(
        store_url=store_url,
        key_prefix=key_prefix,
        kafka_bootstrap=bootstrap,
        topic_prefix=topic_prefix,
        stop_at_end=True,
        recovery=False,
        dead_letters=False,  # the running flow dead-letters them; not twice
    )
    cli_main(
        flow,
        workers_per_process=max(workers, 1),
        process_id=None,
        addresses=None,
        epoch_interval=timedelta(seconds=30),
        recovery_config=None,
    )


def refill(
    *,
    store_url: str,
    key_prefix: str,
    bootstrap: str,
    topic_prefix: str,
    workers: int,
    partitions: int,
    timeout_s: float,
    reason: str,
) -> str:
    """Tombstones, `filling`, the refill from the log, `ready`; returns the store's identity."""
    from connectors import flow_metrics
    from connectors.store import open_store
    from connectors.store.base import IDENTITY_FILLING, IDENTITY_READY

    store = open_store(store_url, key_prefix=key_prefix)
    try:
        restored = restore_tombstones(
            store,
            bootstrap=bootstrap,
            topic_prefix=topic_prefix,
            partitions=partitions,
            timeout_s=timeout_s,
        )
        identity = store.create_identity(state=IDENTITY_FILLING)
        store.set_identity_state(identity.id, IDENTITY_FILLING)
        _say(
            f"refill: store {store_url} (prefix {key_prefix!r}, identity {identity.id}) "
            f"{reason}; {restored} tombstones restored; recomputing every user from the log"
        )
        flow_metrics.STORE_REFILLS.labels(reason.split(":")[0]).inc()
        started = time.monotonic()
        refill_from_log(
            store_url=store_url,
            key_prefix=key_prefix,
            bootstrap=bootstrap,
            topic_prefix=topic_prefix,
            workers=workers,
        )
        if not store.set_identity_state(identity.id, IDENTITY_READY):
            raise RuntimeError(
                f"store {store_url} lost its identity marker again during the refill"
            )
        _say(f"refill: done in {time.monotonic() - started:.1f} s; store marked ready")
        return identity.id
    finally:
        store.close()


def prepare_flow_store(
    *,
    store_url: str,
    key_prefix: str,
    bootstrap: str | None,
    topic_prefix: str,
    recovery_dir: str | None,
    workers: int,
    partitions: int,
    timeout_s: float,
    tombstones_bootstrap: str | None = None,
) -> str:
    """Before the flow writes: tombstones restored, the store refilled if it lost its data.

    `bootstrap` None is an event-log run (`--from`): only the tombstones, read from
    `tombstones_bootstrap` when set, and the marker. Returns the identity of the store the flow writes to (remembered in the recovery directory).
    """
    from connectors.store import open_store
    from connectors.store.base import IDENTITY_FILLING, IDENTITY_READY

    store = open_store(store_url, key_prefix=key_prefix)
    try:
        if bootstrap is None:
            # An event-log replay rewrites every user of its file anyway; the tombstones
            # still come first when there is a Kafka to read them from.
            if tombstones_bootstrap is not None:
                restore_tombstones(
                    store,
                    bootstrap=tombstones_bootstrap,
                    topic_prefix=topic_prefix,
                    partitions=partitions,
                    timeout_s=timeout_s,
                )
            return store.create_identity(state=IDENTITY_READY).id
        restore_tombstones(
            store,
            bootstrap=bootstrap,
            topic_prefix=topic_prefix,
            partitions=partitions,
            timeout_s=timeout_s,
        )
        marker = store.identity()
        remembered = remembered_identity(recovery_dir)
        reason = None
        if marker is None and remembered is not None:
            reason = "lost its data: no identity marker, and the recovery state wrote to one"
        elif marker is not None and marker.state == IDENTITY_FILLING:
            reason = "lost its data: marked filling, the refill has not finished"
        elif marker is not None and remembered is not None and marker.id != remembered:
            reason = f"was replaced: identity {marker.id}, the recovery state wrote to {remembered}"
        if marker is None and reason is None:
            # A store the engine never wrote to (or, without recovery state, one this fresh
            # replay from offset 0 refills anyway).
            marker = store.create_identity(state=IDENTITY_READY)
    finally:
        store.close()
    if reason is None:
        assert marker is not None
        identity_id = marker.id
    else:
        identity_id = refill(
            store_url=store_url,
            key_prefix=key_prefix,
            bootstrap=bootstrap,
            topic_prefix=topic_prefix,
            workers=workers,
            partitions=partitions,
            timeout_s=timeout_s,
            reason=reason,
        )
    remember_identity(recovery_dir, identity_id)
    return identity_id


class StoreWatchdog(threading.Thread):
    """Ends the flow process (exit 75) once the store's identity marker is gone or replaced."""

    def __init__(
        self, store_url: str, *, key_prefix: str, identity_id: str, interval_s: float = 1.0
    ) -> None:
        super().__init__(name="store-watchdog", daemon=True)
        self.store_url = store_url
        self.key_prefix = key_prefix
        self.identity_id = identity_id
        self.interval_s = interval_s

    def run(self) -> None:
        from connectors.exceptions import StoreError
        from connectors.store import open_store

        store = open_store(self.store_url, key_prefix=self.key_prefix, freshness=False)
        while True:
            time.sleep(self.interval_s)
            try:
                marker = store.identity()
            except StoreError:
                continue  # unreachable is an outage, not a loss: the store sink handles it
            if marker is not None and marker.id == self.identity_id:
                continue
            self._lost(store, "gone" if marker is None else f"replaced by {marker.id}")

    def _lost(self, store: FeatureStore, what: str) -> None:
        from connectors.exceptions import StoreError
        from connectors.store.base import IDENTITY_FILLING

        try:
            marker = store.identity() or store.create_identity(state=IDENTITY_FILLING)
            store.set_identity_state(marker.id, IDENTITY_FILLING)
        except StoreError:
            pass
        _say(
            f"error: the store {self.store_url} (prefix {self.key_prefix!r}) lost its data: "
            f"identity marker {self.identity_id} {what}. Marked it 'filling' and exiting with "
            f"code {EXIT_STORE_LOST}: restart the flow (same arguments) and it refills every "
            "user from the log before it goes on (ADR 0008)."
        )
        os._exit(EXIT_STORE_LOST)


def run(args: argparse.Namespace) -> int:
    from connectors.exceptions import ConnectorError
    from oo_features.commands import settings_from
    from oo_features.errors import CommandError

    settings = settings_from(args)
    bootstrap = settings.kafka_bootstrap
    if bootstrap is None:
        raise CommandError("refill reads the log: set OO_KAFKA_BOOTSTRAP or pass --bootstrap")
    store_url = settings.store_url
    try:
        refill(
            store_url=store_url,
            key_prefix=settings.key_prefix,
            bootstrap=bootstrap,
            topic_prefix=settings.topic_prefix,
            workers=args.workers,
            partitions=settings.partitions,
            timeout_s=settings.kafka_timeout_s,
            reason="refill requested",
        )
    except ConnectorError as exc:
        raise CommandError(str(exc)) from exc
    return 0
