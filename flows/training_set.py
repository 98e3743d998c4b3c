"""Training data as of any time: each spine row's features from the events known at its instant.

Contract (docs/features.md, "Training data as of a time"):

- A spine line is `{"user_id": "...", "as_of": "<RFC 3339 instant>"}`. The output has one
  line per spine line, in spine order, `{"user_id", "as_of", "agents": {...}}`, except for
  users deleted anywhere in the log, who get no line at all.
- **Point in time by event time**: a row holds what the engine computes from that user's
  events with `occurred_at <= as_of`, folded in log order, as if the later events did not
  exist. **Privacy as of now**: agents whose required consent is revoked at the end of the
  log are left out of every row of that user.
- **One code path**: events are decoded by `connectors.records.decode_line` (as `backfill`
  and the flow's file source), folded by `features.state.UserState.apply` (an event whose
  fold raises is left out and the state is as before it, the flow's rule, ADR 0011), and
  the row's agents are what `flows.folding.whole_write` of that state writes (`row_agents`
  reads the same outputs, `UserState.plain_outputs`, without building the write: ADR 0035).
  Nothing here computes a feature.
- `agents[agent_id]` has the shape of `GET /v1/users/{id}/features` minus its wall-clock
  and write-time fields: `version`, `params` (name -> `{"value", "source"[,
  "inferred_value"]}`), `extras`, and `snippet` (`{"text"}` or null). The stored
  `event_time` is left out: it is when the store last wrote the agent, which depends on how
  the flow happened to batch the events, not on the history.

Speed (ADR 0028): the events of the spine's users are kept in their wire form
(`Event.SerializeToString()`, with the kind and occurrence validation read) and decoded again
right before a user's rows are made, so they are folded and freed while hot (a million
protobuf objects kept to the end cost more to free than to parse twice). A user's rows are
planned before anything is folded (`plan_passes`): taken in `as_of` order, each row folds
only the events that became known since the previous one while those all come after, in log
order, the ones already folded; otherwise (an event that arrived late in the log) the row
refolds from the first new event's log position, from a snapshot of the state there that the
earlier pass covering that position was asked to pickle. So the only pickles are those a
refold restores. Rows that add no event share the previous row's agents. Events of users
without rows are decoded but not kept, nor are a spine user's events after its latest
`as_of` (but consent changes): they are in no row's history (ADR 0032). The log is read
through `line_fast.fast_line_kept`, which checks an event not kept without building it
(`decode_line` for the lines it leaves to the slow path).
Memory: the spine users' events in wire form.

Failure behaviour: an event line that does not decode or validate is written to the rejects
file with its line number and reason, and the rest go on (as `backfill`). An event whose
fold raises (a bug in an agent) is logged and left out of the rows; the others go on. A spine line that
is not valid raises `SpineError` naming every bad line before any output is written.
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import pickle
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from connectors.codec import USER_ID_PATTERN
from connectors.jsonl import rejects_path_for
from connectors.line_fast import fast_line_kept
from connectors.records import Accepted, Rejected, RejectsFile, decode_line
from connectors.store.base import AgentWrite
from features.inference import cold_params
from features.model import Incoming
from features.registry import REGISTRY
from features.state import UserState
from flows.folding import Pending
from proto import events_pb2 as pb

log = logging.getLogger(__name__)

MAX_SPINE_ERRORS = 20


class SpineError(ValueError):
    """The spine has invalid lines; the message names each (up to `MAX_SPINE_ERRORS`)."""


@dataclass(frozen=True, slots=True)
class SpineRow:
    index: int
    user_id: str
    as_of: str
    as_of_ms: int


@dataclass(slots=True)
class TrainingReport:
    lines: int = 0
    accepted: int = 0
    rejected: int = 0
    rows: int = 0
    rows_left_out: int = 0
    """Spine rows of users deleted in the log (no line written)."""
    refolds: int = 0
    """Rows folded afresh because an event older than the row arrived late in the log."""
    folded: int = 0
    """Event folds done (incremental and afresh)."""


@dataclass(slots=True)
class _User:
    """One spine user's accepted events in log order, kept compact until its rows are made:
    each event in its wire form (`Event.SerializeToString()`), with the kind and occurrence
    its validation read. Decoded again (`Event.FromString`, as a record crossing a process
    boundary is) right before they are folded, so a million events cost a few hundred MB
    rather than a few GB of protobuf objects, and each is folded and freed while it is hot."""

    blobs: list[bytes] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    occurred: list[int] = field(default_factory=list)
    deleted: bool = False

    def records(self, ingest_ms: int, upto: int) -> list[Incoming]:
        """The events at log positions `[0, upto)` as the fold takes them (the decoder's
        record without where it came from: a fold that raises leaves the event out)."""
        parse = pb.Event.FromString
        return [
            Incoming(parse(blob), ingest_ms, kind, occurred)
            for blob, kind, occurred in zip(
                self.blobs[:upto], self.kinds[:upto], self.occurred[:upto], strict=True
            )
        ]

    def records_of(self, kind: str, ingest_ms: int) -> list[Accepted]:
        """The events of one payload kind, in log order, as `records` gives them."""
        parse = pb.Event.FromString
        return [
            Accepted(parse(self.blobs[i]), ingest_ms, kind, self.occurred[i])
            for i, k in enumerate(self.kinds)
            if k == kind
        ]


def parse_as_of(text: Any) -> int:
    """Epoch ms of an RFC 3339 instant with an offset (`ValueError` says what is expected).

    >>> parse_as_of("2026-05-01T00:00:00Z"), parse_as_of("2026-05-01T02:00:00.5+02:00")
    (1777593600000, 1777593600500)
    """
    if not isinstance(text, str):
        raise ValueError(f"'as_of' must be an RFC 3339 string; got {type(text).__name__}")
    try:
        when = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise ValueError(f"'as_of' is not an RFC 3339 instant: {text!r}") from None
    if when.tzinfo is None:
        raise ValueError(f"'as_of' needs an offset (Z or +hh:mm): {text!r}")
    return round(when.timestamp() * 1000)


def read_spine(path: str | Path) -> list[SpineRow]:
    """Every spine line, validated; `SpineError` naming the bad lines."""
    import re

    user_pattern = re.compile(USER_ID_PATTERN)
    rows: list[SpineRow] = []
    errors: list[str] = []
    with Path(path).open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
                if not isinstance(data, dict):
                    raise ValueError(f"expected a JSON object; got {type(data).__name__}")
                user_id = data.get("user_id")
                if not isinstance(user_id, str) or not user_pattern.fullmatch(user_id):
                    raise ValueError(f"'user_id' must match {USER_ID_PATTERN}; got {user_id!r}")
                as_of_ms = parse_as_of(data.get("as_of"))
            except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError included
                errors.append(f"{path}:{line_no}: {exc}")
                continue
            rows.append(SpineRow(len(rows), user_id, data["as_of"], as_of_ms))
    if errors:
        more = len(errors) - MAX_SPINE_ERRORS
        listed = "\n".join(errors[:MAX_SPINE_ERRORS]) + (
            f"\n... and {more} more" if more > 0 else ""
        )
        raise SpineError(f"{len(errors)} invalid spine line(s):\n{listed}")
    return rows


def _read_events(
    path: Path,
    horizons: Mapping[str, int],
    report: TrainingReport,
    rejects: RejectsFile,
    progress: Callable[[int], None] | None,
    ingest_ms: int,
    now_s: float,
) -> dict[str, _User]:
    """The accepted events of the spine's users (`horizons`: user id -> the latest `as_of_ms`
    of its rows), each user's in log order; every other line is only decoded and validated,
    and a bad one goes to `rejects`. An event after its user's horizon is in no row's
    history, so it is not kept unless it is a consent change (the consents as of now are
    the fold of them all); a deletion anywhere only sets the user's flag.

    A line goes to `line_fast.fast_line_kept` first: for a line it answers, that is
    `decode_line`'s answer (`jsonl.read_line` tries `fast_line` first), without the record
    around it, and without the Event when it is not kept (it is checked all the same).
    Any other line (line 1 too: its byte-order mark) goes through `decode_line`, which words
    the reject."""
    users = {user_id: _User() for user_id in horizons}
    name = str(path)
    step = line_no = 0
    accepted = 0
    fast = fast_line_kept
    with path.open("rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            got = fast(line, now_s, horizons) if line_no != 1 else None
            if got is None:
                record = decode_line(name, line_no, line, ingest_ms=ingest_ms, now_s=now_s)
                if record is None:
                    pass
                elif isinstance(record, Rejected):
                    report.rejected += 1
                    rejects.add(record)
                else:
                    got = record.event, record.kind, record.occurred_ms
            if got is not None:
                accepted += 1
                event, kind, occurred_ms = got
                if event is not None:  # None: valid, and not kept (not built)
                    user_id = event.user_id
                    user = users.get(user_id)
                    if user is not None:
                        if kind == "user_deleted":
                            user.deleted = True
                        if occurred_ms <= horizons[user_id] or kind == "consent_changed":
                            user.blobs.append(event.SerializeToString())
                            user.kinds.append(kind)
                            user.occurred.append(occurred_ms)
            step += 1
            if progress is not None and step == 10_000:
                progress(step)
                step = 0
    report.accepted += accepted
    report.lines = line_no
    if progress is not None and step:
        progress(step)
    return users


def final_consents(events: Iterable[Accepted]) -> dict[str, bool]:
    """The user's consents at the end of the log, by the fold itself (only consent events)."""
    state = UserState("consents")
    pending = Pending()
    pending.fold(state, [e for e in events if e.kind == "consent_changed"])
    return state.consent_map()


def _allowed(consents: Mapping[str, bool]) -> set[str]:
    return {
        agent_id
        for agent_id, cls in REGISTRY.items()
        if all(consents.get(c, True) for c in cls.MANIFEST.required_consents)
    }


def _row(
    version: str, params: Any, extras: Any, snippet: str | None, ttl_seconds: int
) -> dict[str, Any]:
    """A row's view of one agent's outputs: the snippet as the store keeps it (an agent whose
    snippets live no time has none)."""
    return {
        "version": version,
        "params": params,
        "extras": extras,
        "snippet": None if snippet is None or ttl_seconds <= 0 else {"text": snippet},
    }


def agent_row(a: AgentWrite) -> dict[str, Any]:
    """The row's view of one agent write (what `row_agents` gives for it)."""
    return _row(a.version, a.params, a.extras, a.snippet, a.ttl_seconds)


def row_agents(state: UserState, allowed: AbstractSet[str]) -> dict[str, dict[str, Any]]:
    """`agent_row` of each agent of `flows.folding.whole_write(state)` in `allowed`, by agent id.

    The same values from the same outputs (`UserState.plain_outputs`, which `build_write` reads),
    without what only a store needs: a row has no use for the parameters' and extras' JSON
    text, the digests or the `AgentWrite` objects (`tests/unit/test_training_set.py` compares
    the two on every row of generated logs)."""
    if state.deleted:
        return {}  # `build_write` writes no agent for a deleted user
    agents: dict[str, dict[str, Any]] = {}
    live = [agent_id for agent_id in sorted(state.agents) if agent_id in allowed]
    for agent_id, agent, (params, extras, snippet, cold_key) in state.plain_outputs(live):
        manifest = agent.MANIFEST
        if cold_key is not None:
            params = cold_params(cold_key)
        agents[agent_id] = _row(manifest.version, params, extras, snippet, manifest.ttl_seconds)
    return agents


_CONTINUE = (-1, -1)
"""A pass that goes on from the state the previous pass left."""


@dataclass(slots=True)
class _Pass:
    """One fold of a user's rows: the state (restored from `restore`: a snapshot key, None for
    a fresh state, `_CONTINUE` for the previous pass's state) folds the events at log
    positions `[start, end)` with `occurred_ms <= limit`, in log order; the state is pickled
    on the way at each position of `snapshots` (before folding the events at and after it)
    for a later pass to restore. The rows of `rows` are then answered from it."""

    start: int
    end: int
    limit: int
    restore: tuple[int, int] | None
    snapshots: list[int] = field(default_factory=list)
    rows: list[SpineRow] = field(default_factory=list)


def plan_passes(
    occurred: list[int], rows: list[SpineRow]
) -> tuple[list[SpineRow], list[_Pass], int]:
    """The passes that answer `rows` over a user's events (`occurred`: their `occurred_ms` in
    log order), before anything is folded; with the rows that come before any event (they have
    no agents) and the number of refolds.

    A row's history is every event with `occurred_ms <= as_of`, in log order. Rows are taken in
    `as_of` order, each pass going on from the previous row's state: when the events the row
    adds all come after (in the log) the last event folded, a pass folds them next. Otherwise
    (an event that arrived late in the log) the pass refolds from the first added event's log
    position `f`, restoring a snapshot of the state at `f` that the earlier pass covering `f`
    is asked to take (a state that had folded exactly the events before `f` of the history):
    the only pickles taken are those a refold will restore (fresh when `f` is 0).
    """
    # In time order, ties in log order (the sort is stable).
    by_time = sorted(range(len(occurred)), key=occurred.__getitem__)
    times = list(map(occurred.__getitem__, by_time))
    # prefix_max[q]: the last log position in by_time[:q] (-1 for none)
    prefix_max = list(itertools.accumulate(by_time, max, initial=-1))
    before: list[SpineRow] = []
    passes: list[_Pass] = []
    # The passes whose folded state is still that of the current history, in log order: pass
    # `path_ids[k]` holds the state at positions [path_starts[k], path_starts[k + 1]).
    path_starts: list[int] = []
    path_ids: list[int] = []
    known = 0  # the state folded by_time[:known] ...
    next_pos = 0  # ... and every one of them is at a log position before this one
    refolds = 0
    for row in sorted(rows, key=lambda r: (r.as_of_ms, r.index)):
        upto = bisect.bisect_right(times, row.as_of_ms)
        if upto <= known:
            (passes[-1].rows if passes else before).append(row)
            continue
        start = next_pos
        restore: tuple[int, int] | None = _CONTINUE
        first_new = min(by_time[known:upto])
        if first_new < next_pos:
            refolds += 1
            start = first_new
            k = bisect.bisect_right(path_starts, first_new) - 1
            covering = passes[path_ids[k]]
            if first_new == 0:
                restore = None
            elif path_starts[k] == first_new and covering.restore is not _CONTINUE:
                restore = covering.restore  # that pass started from this very state
            else:
                covering.snapshots.append(first_new)  # each position once: f leaves its cover
                restore = (path_ids[k], first_new)
            cut = k if path_starts[k] == first_new else k + 1
            del path_starts[cut:], path_ids[cut:]
        end = prefix_max[upto] + 1  # past the last event of the row's history
        passes.append(_Pass(start, end, row.as_of_ms, restore, rows=[row]))
        path_starts.append(start)
        path_ids.append(len(passes) - 1)
        known, next_pos = upto, max(next_pos, end)
    return before, passes, refolds


def _restore(user_id: str, origin: bytes | None) -> UserState:
    return UserState(user_id) if origin is None else pickle.loads(origin)


def _fold(
    state: UserState,
    events: list[Incoming],
    chunk: list[int],
    origin: bytes | None,
    since: list[int],
) -> UserState:
    """Fold `events[i]` for each i of `chunk` into `state`, in order; returns the state.

    The promise of the flow's fold (ADR 0011) without its rebuild base: an event whose fold
    raises is left out and the state is rebuilt as it was before it, from `origin` (the
    checkpoint the state started from, None: fresh) and `since` (the events folded into it
    since, kept up to date here). Every event is at hand, so nothing is pickled for this.
    """
    apply = state.apply
    for i in chunk:
        try:
            apply(events[i])
        except Exception:
            log.exception(
                "folding event %r of user %r raised; the event is left out of the training rows",
                events[i].event.event_id,
                state.user_id,
            )
            state = _restore(state.user_id, origin)
            for j in since:
                state.apply(events[j])  # folded before without raising: folding is deterministic
            apply = state.apply
            continue
        since.append(i)
    return state


def user_rows(
    user_id: str, user: _User, rows: list[SpineRow], report: TrainingReport, ingest_ms: int = 0
) -> Iterator[tuple[SpineRow, dict[str, Any]]]:
    """(row, agents) of each of the user's rows, in `as_of` order (the passes of `plan_passes`).

    Rows that add no event to the previous row's history share its agents (computed once)."""
    before, passes, refolds = plan_passes(user.occurred, rows)
    report.refolds += refolds
    for row in before:
        yield row, {}
    if not passes:
        return
    events = user.records(ingest_ms, max(p.end for p in passes))
    allowed = _allowed(final_consents(user.records_of("consent_changed", ingest_ms)))
    occurred = user.occurred
    state = UserState(user_id)
    origin: bytes | None = None  # where `state` started: a snapshot, or None (fresh) ...
    since: list[int] = []  # ... and the events folded into it since, in order
    snapshots: dict[tuple[int, int], bytes] = {}
    for number, step in enumerate(passes):
        restore = step.restore
        if restore is not _CONTINUE:
            origin = None if restore is None else snapshots[restore]
            state, since = _restore(user_id, origin), []
        limit = step.limit
        todo = list(
            itertools.compress(
                range(step.start, step.end), map(limit.__ge__, occurred[step.start : step.end])
            )
        )
        at = 0
        for position in sorted(step.snapshots):
            cut = bisect.bisect_left(todo, position)
            state = _fold(state, events, todo[at:cut], origin, since)
            at = cut
            origin, since = pickle.dumps(state, pickle.HIGHEST_PROTOCOL), []
            snapshots[(number, position)] = origin
        state = _fold(state, events, todo[at:], origin, since)
        report.folded += len(todo)
        agents = row_agents(state, allowed)
        for row in step.rows:
            yield row, agents


_ROW_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"""One encoder for every row (what `json.dumps(..., ensure_ascii=False, separators=...)`
builds per call)."""


def training_set(
    events_path: str | Path,
    spine_path: str | Path,
    out: TextIO,
    *,
    rejects_path: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> TrainingReport:
    """Write the training rows of `spine_path` over the event log `events_path` to `out`."""
    source = Path(events_path)
    if not source.is_file():
        raise FileNotFoundError(f"event log {source} does not exist")
    spine = read_spine(spine_path)
    report = TrainingReport()
    rejects_file = rejects_path_for(source, rejects_path)
    horizons: dict[str, int] = {}
    for row in spine:
        horizons[row.user_id] = max(row.as_of_ms, horizons.get(row.user_id, row.as_of_ms))
    now_s = time.time()
    ingest_ms = int(now_s * 1000)
    with RejectsFile(rejects_file) as rejects:
        users = _read_events(source, horizons, report, rejects, progress, ingest_ms, now_s)
    per_user: dict[str, list[SpineRow]] = {}
    for row in spine:
        per_user.setdefault(row.user_id, []).append(row)
    lines: list[str | None] = [None] * len(spine)
    encode = _ROW_JSON.encode
    for user_id, rows in per_user.items():
        user = users.get(user_id, _User())
        if user.deleted:
            report.rows_left_out += len(rows)
            continue
        for row, agents in user_rows(user_id, user, rows, report, ingest_ms):
            lines[row.index] = encode({"user_id": user_id, "as_of": row.as_of, "agents": agents})
        users.pop(user_id, None)  # its events are folded: free them while they are hot
    for text in lines:
        if text is not None:
            out.write(text + "\n")
            report.rows += 1
    return report
