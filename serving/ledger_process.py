"""The tip ledger's records made by a process of their own (ADR 0053).

At 200 recommends a second the API process is most of one core, so what the ledger's worker
thread does there (encoding each entry, packing a trip's script call, waking for Redis's
answer) is time a request waits for the GIL, and it showed at the p99. With a Redis store the
app owns, `serving.after`'s ledger worker only forwards: each trip's tips (those of 0.25 s) and
the reactions in their place go as one message down a pipe, to a child process, which opens
its own store as the app does (`open_api_store`) and records them there exactly as the worker
did in process (`serving.ledger.record_tips`, `record_reaction`: the same scripts, the same
tombstone check, the same encoding).

Guarantees kept:

- order: tips and reactions travel one pipe, in queue order, and the child records them in
  that order (a reaction never before its tip);
- a store that is away loses the line, never the tip: the child logs it (its log goes to the
  API's standard error) and reports it back; the API counts it in `oo_ledger_failed_total`;
- a tip recorded after the user's deletion is refused by the store itself, atomically, as
  before (the child calls the same script);
- a store the child cannot open fails each line sent to it, counted (it tries again for the
  next trip); a child that died fails the trips sent after it, counted, and the next trip
  starts a new one. What a child held when it was killed is lost uncounted, as what the
  worker held when the API was (the loss window of ADR 0041).

What it must never do: block a request (only the worker thread writes to the pipe), or
record anything the in-process path would not.

The wire (ADR 0058): each item is pickled on its own (`wire`), by the route that served the
tip (`serving.ledger.tip_wire`) or the reaction: a plain tuple of strings and numbers, a few
microseconds, so what waits in the worker's queue for its trip is one `bytes` object and none
of the request's objects (a queued closure over the user read kept them alive for the trip's
0.25 s: the collector then met them, moved them to its older generations and collected those
about twice as often, pauses of 1-10 ms and more in the API's event loop). A trip's message is
the items' pickles one after another (`send`: one `bytes.join`), read back in order by the
child (`items_of`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from connectors.store.ledger import LedgerAgent, LedgerEntry

__all__ = ["LedgerProcess", "LedgerStoreConfig", "items_of", "open_api_store", "wire"]

log = logging.getLogger(__name__)

CHILD_NICENESS = 10
"""How much lower the child's CPU priority is than the API's (`os.nice`): its bursts of
recording (a few ms every 0.25 s) wait for a core rather than take one from a request."""

Tip = tuple[Any, ...]
"""A tip on the wire: `("tip", now_ms, tip_id, user_id, shown_at_ms, text, kind, agents,
fallback_reason, prompt_version, model, orchestrator_latency_ms, extra)`, each agent
`(agent_id, version, params_json, snippet)`."""


def open_api_store(
    store_url: str, *, key_prefix: str, timeout_s: float, ledger_url: str | None
) -> Any:
    """The store as the API opens it, in the app's lifespan and in the ledger's process alike:
    short client timeouts (ADR 0010), so a stopped Redis is noticed within one timeout and a
    thread a request abandoned is free again soon after, and one client retry."""
    from connectors.store import open_store

    return open_store(
        store_url,
        key_prefix=key_prefix,
        socket_timeout_s=timeout_s,
        connect_timeout_s=timeout_s,
        client_retries=1,
        ledger_url=ledger_url,
    )


@dataclass(frozen=True)
class LedgerStoreConfig:
    """How the child opens its store: what `serving.app`'s lifespan gives `open_store`."""

    store_url: str
    key_prefix: str
    timeout_s: float
    ledger_url: str | None
    retention_ms: int


def tip_message(entry: LedgerEntry, now_ms: int) -> Tip:
    """`entry` as plain values; each agent's parameters as the stored JSON text."""
    from connectors.store.base import dumps_compact

    agents = tuple(
        (
            a.agent_id,
            a.version,
            a.params_json if a.params_json is not None else dumps_compact(a.params),
            a.snippet,
        )
        for a in entry.agents
    )
    return (
        "tip",
        now_ms,
        entry.tip_id,
        entry.user_id,
        entry.shown_at_ms,
        entry.text,
        entry.kind,
        agents,
        entry.fallback_reason,
        entry.prompt_version,
        entry.model,
        entry.orchestrator_latency_ms,
        entry.extra,
    )


def wire(item: Tip) -> bytes:
    """One item (`tip_message`, a `("reaction", ...)` tuple) as it goes down the pipe: its
    pickle, one of a trip's message's pieces."""
    return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)


def items_of(message: bytes) -> list[Tip]:
    """The items of one message (pickles one after another: `LedgerProcess.send`), in order."""
    stream = io.BytesIO(message)
    items: list[Tip] = []
    while stream.tell() < len(message):
        items.append(pickle.load(stream))
    return items


def entry_of(message: Tip) -> tuple[LedgerEntry, int]:
    """The entry `tip_message` sent, and its `now_ms` (`params` left empty: the stores encode
    an agent's values from `params_json`, `LedgerEntry.encoded`)."""
    (_, now_ms, tip_id, user_id, shown_at_ms, text, kind, agents, reason, prompt, model) = message[
        :11
    ]
    entry = LedgerEntry(
        tip_id=tip_id,
        user_id=user_id,
        shown_at_ms=shown_at_ms,
        text=text,
        kind=kind,
        agents=[
            LedgerAgent(agent_id=a, version=v, params={}, snippet=s, params_json=p)
            for a, v, p, s in agents
        ],
        fallback_reason=reason,
        prompt_version=prompt,
        model=model,
        orchestrator_latency_ms=message[11],
        extra=message[12],
    )
    return entry, now_ms


def _child_main(inbox: Connection, outbox: Connection, config: LedgerStoreConfig) -> None:
    """The child: record each message's items in order until the pipe closes; report each
    lost line (`("failed", what)`) and each message's CPU and tips (`("batch", s, n)`)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s (ledger): %(message)s"
    )
    # Background work: on a busy host the scheduler gives the API's requests the cores first.
    with contextlib.suppress(OSError):
        os.nice(CHILD_NICENESS)
    from serving import ledger

    def on_failed(what: str) -> None:
        outbox.send(("failed", what))

    def opened() -> Any:
        try:
            return open_api_store(
                config.store_url,
                key_prefix=config.key_prefix,
                timeout_s=config.timeout_s,
                ledger_url=config.ledger_url,
            )
        except Exception as exc:  # a store that cannot be opened loses lines, counted
            log.warning("the ledger's store cannot be opened: %s", exc)
            return None

    store = opened()
    try:
        while True:
            try:
                blob = inbox.recv_bytes()
            except EOFError:
                return
            cpu = time.process_time()
            items = items_of(blob)
            if store is None:
                store = opened()
            if store is None:
                for item in items:
                    on_failed(item[0])
                continue
            tips: list[tuple[LedgerEntry, int]] = []
            for item in items:
                if item[0] == "tip":
                    tips.append(entry_of(item))
                    continue
                if tips:
                    ledger.record_tips(
                        store, tips, retention_ms=config.retention_ms, on_failed=on_failed
                    )
                    tips = []
                _, user_id, tip_id, reaction, reaction_id, at_ms = item
                ledger.record_reaction(
                    store,
                    user_id=user_id,
                    tip_id=tip_id,
                    reaction=reaction,
                    reaction_id=reaction_id,
                    at_ms=at_ms,
                    on_failed=on_failed,
                )
            if tips:
                ledger.record_tips(
                    store, tips, retention_ms=config.retention_ms, on_failed=on_failed
                )
            outbox.send(("batch", time.process_time() - cpu, sum(i[0] == "tip" for i in items)))
    finally:
        if store is not None:
            store.close()
        outbox.close()


class LedgerProcess:
    """The API's side of the ledger's child process: `send` a trip (from the ledger worker
    thread only), `stop` at shutdown. `on_failed(what)` and `on_batch(cpu_s, tips)` are called
    from a reader thread of its own with what the child reports."""

    def __init__(
        self,
        config: LedgerStoreConfig,
        *,
        on_failed: Callable[[str], None],
        on_batch: Callable[[float, int], None],
    ) -> None:
        self._config = config
        self._on_failed = on_failed
        self._on_batch = on_batch
        self._process: Any = None
        self._inbox: Connection | None = None

    def _start(self) -> Connection:
        context = multiprocessing.get_context("spawn")  # never fork an API with threads
        inbox_read, inbox = context.Pipe(duplex=False)
        outbox_read, outbox = context.Pipe(duplex=False)
        process = context.Process(
            target=_child_main,
            args=(inbox_read, outbox, self._config),
            name="oo-ledger",
            daemon=True,
        )
        process.start()
        inbox_read.close()
        outbox.close()
        threading.Thread(
            target=self._read_reports, args=(outbox_read,), name="oo-ledger-reports", daemon=True
        ).start()
        self._process, self._inbox = process, inbox
        return inbox

    def _read_reports(self, reports: Connection) -> None:
        while True:
            try:
                report = reports.recv()
            except (EOFError, OSError):
                reports.close()
                return
            try:
                if report[0] == "failed":
                    self._on_failed(report[1])
                else:
                    self._on_batch(report[1], report[2])
            except Exception:  # a counter that fails must not end the reports
                log.exception("counting the ledger process's report failed")

    def send(self, items: Sequence[bytes]) -> None:
        """Hand a trip's `items` (each `wire` of a `tip_message` or a `("reaction", ...)`
        tuple) to the child as one message, started on first use or again after it died.
        `OSError` when it cannot be handed over."""
        inbox = self._inbox
        if inbox is None or not self._process.is_alive():
            self._close_inbox()
            inbox = self._start()
        # One join (a copy) while holding the GIL; the pipe's write lets go of it.
        inbox.send_bytes(b"".join(items))

    def _close_inbox(self) -> None:
        inbox, self._inbox = self._inbox, None
        if inbox is not None:
            with contextlib.suppress(OSError):
                inbox.close()

    def stop(self, deadline: float) -> None:
        """Close the pipe (the child records what it holds, then ends) and wait for it until
        `deadline` (`time.monotonic()`); a child still busy then is terminated."""
        process = self._process
        self._close_inbox()
        if process is None:
            return
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            log.warning("the ledger process did not finish in time; stopping it")
            process.terminate()
            process.join(1.0)
        self._process = None
