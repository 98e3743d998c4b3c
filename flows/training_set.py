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
  turned into writes by `flows.folding.build_write`
  (without dedupe), which are applied to the row's view as the store applies them (an agent
  write replaces, a removed agent goes). Nothing here computes a feature.
- `agents[agent_id]` has the shape of `GET /v1/users/{id}/features` minus its wall-clock
  and write-time fields: `version`, `params` (name -> `{"value", "source"[,
  "inferred_value"]}`), `extras`, and `snippet` (`{"text"}` or null). The stored
  `event_time` is left out: it is when the store last wrote the agent, which depends on how
  the flow happened to batch the events, not on the history.

Speed: a user's rows are taken in `as_of` order and folded incrementally (each row folds
only the events that became known since the previous one) while the events that became
known all come after, in log order, the ones already folded; otherwise (an event that
arrived late in the log) the row goes on from the newest earlier row's checkpoint for which
that holds, or afresh (`user_rows`). Events of
users without rows are decoded but not folded. Memory: the events of the spine's users.

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
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from connectors.codec import USER_ID_PATTERN
from connectors.jsonl import rejects_path_for
from connectors.records import Accepted, Rejected, RejectsFile, decode_line
from connectors.store.base import AgentWrite
from features.registry import REGISTRY
from features.state import UserState
from flows.folding import Pending, whole_write

log = logging.getLogger(__name__)

COMPUTED_AT_MS = 0
"""Training rows carry no wall-clock time: `build_write` is given this fixed one."""
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
    events: list[Accepted] = field(default_factory=list)
    deleted: bool = False


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
    wanted: set[str],
    report: TrainingReport,
    rejects: RejectsFile,
    progress: Callable[[int], None] | None,
) -> dict[str, _User]:
    users: dict[str, _User] = {}
    now_s = time.time()
    ingest_ms = int(now_s * 1000)
    name = str(path)
    step = line_no = 0
    with path.open("rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            record = decode_line(name, line_no, line, ingest_ms=ingest_ms, now_s=now_s)
            if record is not None:
                if isinstance(record, Rejected):
                    report.rejected += 1
                    rejects.add(record)
                else:
                    report.accepted += 1
                    user_id = record.event.user_id
                    if user_id in wanted:
                        # Kept until the user's rows are made: drop the line itself (a fold
                        # that raises leaves the event out; there is no dead letter to write).
                        record.origin = None
                        user = users.get(user_id)
                        if user is None:
                            user = users[user_id] = _User()
                        if record.kind == "user_deleted":
                            user.deleted = True
                        user.events.append(record)
            step += 1
            if progress is not None and step == 10_000:
                progress(step)
                step = 0
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


def agent_row(a: AgentWrite) -> dict[str, Any]:
    return {
        "version": a.version,
        "params": a.params,
        "extras": a.extras,
        "snippet": None if a.snippet is None or a.ttl_seconds <= 0 else {"text": a.snippet},
    }


CHECKPOINT_EVERY = 64
"""A user's state is pickled after every this many folded events (when its log is out of
time order), so a row that needs an event that arrived late refolds only from before it."""


def _restore(user_id: str, origin: bytes | None) -> UserState:
    return UserState(user_id) if origin is None else pickle.loads(origin)


def _fold(
    state: UserState,
    events: list[Accepted],
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
    user_id: str, events: list[Accepted], rows: list[SpineRow], report: TrainingReport
) -> Iterator[tuple[SpineRow, dict[str, Any]]]:
    """(row, agents) of each of the user's rows, in `as_of` order (see the module).

    A row's history is every event with `occurred_ms <= as_of`, in log order. Rows are taken
    in `as_of` order; the state holds the previous row's history folded. When the events the
    new row adds all come after (in the log) the last event folded, they are folded next.
    Otherwise the state goes back to the newest checkpoint taken before the first added
    event's log position (a pickled state that folded the previous history up to there; a
    fresh state when none) and folds the new row's history from there on, in log order.
    """
    allowed = _allowed(final_consents(events))
    occurred = [e.occurred_ms for e in events]
    by_time = sorted(range(len(events)), key=lambda i: (occurred[i], i))
    times = [occurred[i] for i in by_time]
    in_order = all(a < b for a, b in itertools.pairwise(by_time))
    prefix_max = [-1] * (len(by_time) + 1)  # prefix_max[q]: last log position in by_time[:q]
    for q, i in enumerate(by_time):
        prefix_max[q + 1] = i if i > prefix_max[q] else prefix_max[q]
    state = UserState(user_id)
    known = 0  # the state folded by_time[:known] ...
    next_pos = 0  # ... and every one of them is at a log position before this one
    checkpoints: list[tuple[int, bytes]] = []  # (next_pos, pickled state), ascending
    origin: bytes | None = None  # where `state` started: a checkpoint, or None (fresh) ...
    since: list[int] = []  # ... and the events folded into it since, in order
    agents: dict[str, Any] = {}
    for row in sorted(rows, key=lambda r: (r.as_of_ms, r.index)):
        upto = bisect.bisect_right(times, row.as_of_ms)
        if upto > known:
            first_new = min(by_time[known:upto])
            if first_new < next_pos:
                report.refolds += 1
                while checkpoints and checkpoints[-1][0] > first_new:
                    checkpoints.pop()
                if checkpoints:
                    next_pos, origin = checkpoints[-1]
                else:
                    next_pos, origin = 0, None
                state, since = _restore(user_id, origin), []
            end = prefix_max[upto] + 1  # past the last event of the row's history
            limit = row.as_of_ms
            todo = [i for i in range(next_pos, end) if occurred[i] <= limit]
            for at in range(0, len(todo), CHECKPOINT_EVERY):
                chunk = todo[at : at + CHECKPOINT_EVERY]
                state = _fold(state, events, chunk, origin, since)
                if not in_order:
                    origin, since = pickle.dumps(state, pickle.HIGHEST_PROTOCOL), []
                    checkpoints.append((chunk[-1] + 1, origin))
            report.folded += len(todo)
            known, next_pos = upto, max(next_pos, end)
            write = whole_write(state, computed_at_ms=COMPUTED_AT_MS)
            views = {} if write is None else write.agents
            agents = {a: agent_row(views[a]) for a in sorted(views) if a in allowed}
        yield row, agents


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
    wanted = {row.user_id for row in spine}
    with RejectsFile(rejects_file) as rejects:
        users = _read_events(source, wanted, report, rejects, progress)
    per_user: dict[str, list[SpineRow]] = {}
    for row in spine:
        per_user.setdefault(row.user_id, []).append(row)
    lines: list[str | None] = [None] * len(spine)
    for user_id, rows in per_user.items():
        user = users.get(user_id, _User())
        if user.deleted:
            report.rows_left_out += len(rows)
            continue
        for row, agents in user_rows(user_id, user.events, rows, report):
            lines[row.index] = json.dumps(
                {"user_id": user_id, "as_of": row.as_of, "agents": agents},
                ensure_ascii=False,
                separators=(",", ":"),
            )
    for text in lines:
        if text is not None:
            out.write(text + "\n")
            report.rows += 1
    return report
