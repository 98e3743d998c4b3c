"""Resume benchmark: `oo-features flow --recovery-dir` over the recovery state of many users.

What it measures (issue 10, "Speed and size"): the time from spawning
`oo-features flow --recovery-dir DIR` to its first store write after resuming, and the flow's
memory per resumed user.

How the recovery state is built (a real Bytewax recovery store, written by a real flow):
  1. `--templates` generator users with `--days` of history each are folded into `UserState`s
     and snapshotted by the flow's own `UserLogic.snapshot()` (the bytes Bytewax stores);
  2. one event for each of `--users` users is published and a real flow runs once over it
     with `--recovery-dir DIR --recovery-partitions P`, so DIR holds Bytewax's partitions, the
     source's offsets, a committed epoch and one snapshot row per user, in the partition
     Bytewax chose for it;
  3. each user's snapshot is replaced by a template's, user `u{i:05d}` getting template
     `i % templates` with its user id rewritten (the generator's ids have the same length, so
     the pickle stays valid): months of history each;
  4. one new event for a resumed user (`u00001`) is published;
  5. the flow is spawned in tail mode; this process polls the store until that user's write
     lands, reads the flow's resident memory (`/proc/PID/status` VmRSS, VmHWM) and stops it.
The same is done with one resumed user for the baseline memory; per user = difference / users.

    .venv/bin/python bench/resume.py                       # 100,000 users, 300 templates, 90 days
    .venv/bin/python bench/resume.py --users 10000         # quicker
    .venv/bin/python bench/resume.py --partitions 1        # one recovery partition
    .venv/bin/python bench/resume.py --dumps 5 10 20       # + py-spy stacks at those seconds

Kafka/Redis: `--bootstrap`/`--store-url`, else $OO_KAFKA_BOOTSTRAP/$OO_STORE_URL, else the local
services (started if needed). Topics, keys and the recovery directory are deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.flow_run import _endpoints  # noqa: E402
from connectors import topics  # noqa: E402
from connectors.codec import from_json  # noqa: E402
from connectors.kafka import EventProducer, ensure_topics  # noqa: E402
from connectors.records import Accepted  # noqa: E402
from connectors.store import open_store  # noqa: E402
from features.state import UserState  # noqa: E402
from flows.features_flow import UserLogic  # noqa: E402
from flows.folding import Pending, fold_batch  # noqa: E402
from oo_features.services import delete_keys, delete_topics  # noqa: E402

STEP = "oo_features.fold_user_state"
PROBE_USER = "u00001"
TARGET_S = 10.0


def _templates(count: int, days: int, seed: int) -> list[bytes]:
    """Snapshots of `count` users with `days` of history, as the flow writes them (the folded
    states are cached in the temporary directory: folding is the slow part)."""
    from oo_features.generate import generate_events

    cache = Path(tempfile.gettempdir()) / f"oo-resume-states-{count}-{days}-{seed}.pickle"
    if cache.exists():
        states = pickle.loads(cache.read_bytes())
    else:
        by_user: dict[str, list[Accepted]] = defaultdict(list)
        for n, event in enumerate(generate_events(count, days, seed)):
            by_user[event.user_id].append(Accepted.of(event, 1_000_000 + n))
        states = []
        for index in range(count):
            state = UserState(f"u{index:05d}")
            fold_batch(state, by_user[state.user_id], computed_at_ms=0)
            states.append(state)
        cache.write_bytes(pickle.dumps(states, protocol=pickle.HIGHEST_PROTOCOL))
    flush = timedelta(seconds=1)
    return [UserLogic(state, Pending(), flush, flush, True).snapshot() for state in states]


def _event(user_id: str, n: int) -> object:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return from_json(
        f'{{"eventId":"bench-resume-{n}","userId":"{user_id}","occurredAt":"{now}",'
        f'"utcOffsetMinutes":60,"moodLogged":{{"score":4}}}}'
    )


def _flow_argv(recovery: Path) -> list[str]:
    return [sys.executable, "-m", "oo_features.cli", "flow", "--recovery-dir", str(recovery)]


def _fill_recovery(recovery: Path, templates: list[bytes], users: int) -> tuple[int, int]:
    """Replace every user's snapshot by a template's; returns (users replaced, bytes)."""
    replaced = total = 0
    for part in sorted(recovery.glob("*.sqlite3")):
        conn = sqlite3.connect(part)
        rows = conn.execute(
            "SELECT rowid, state_key FROM snaps WHERE step_id = ?", (STEP,)
        ).fetchall()
        updates = []
        for rowid, key in rows:
            i = int(key[1:])
            t = i % len(templates)
            blob = templates[t].replace(f"u{t:05d}".encode(), key.encode())
            ser = pickle.dumps(blob, protocol=4)  # how Bytewax serialises a snapshot
            total += len(ser)
            updates.append((ser, rowid))
        with conn:
            conn.executemany("UPDATE snaps SET ser_change = ? WHERE rowid = ?", updates)
        conn.close()
        replaced += len(updates)
    assert replaced == users, f"the first run snapshotted {replaced} users, not {users}"
    return replaced, total


def _memory_kib(pid: int) -> tuple[int, int]:
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


def _one(
    args: argparse.Namespace, bootstrap: str, store_url: str, templates: list[bytes], users: int
) -> dict[str, float]:
    prefix = f"rb{uuid.uuid4().hex[:8]}."
    key_prefix = prefix.rstrip(".")
    env = {
        **os.environ,
        "OO_KAFKA_BOOTSTRAP": bootstrap,
        "OO_STORE_URL": store_url,
        "OO_TOPIC_PREFIX": prefix,
        "OO_KEY_PREFIX": key_prefix,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    workdir = Path(tempfile.mkdtemp(prefix="oo-resume-"))
    recovery = workdir / "recovery"
    try:
        ensure_topics(
            bootstrap,
            topics.engine_topics(prefix),
            partitions=4,
        )
        producer = EventProducer(bootstrap=bootstrap, topic_prefix=prefix)
        for i in range(users):
            producer.publish(_event(f"u{i:05d}", i))  # type: ignore[arg-type]
        assert producer.flush(60).published == users
        t = time.perf_counter()
        subprocess.run(
            [*_flow_argv(recovery), "--stop-at-end", "--recovery-partitions", str(args.partitions)],
            env=env,
            check=True,
            capture_output=True,
        )
        _, size = _fill_recovery(recovery, templates, users)
        fill_s = time.perf_counter() - t

        producer.publish(_event(PROBE_USER, users))  # type: ignore[arg-type]
        assert producer.flush(30).published == 1
        producer.close()
        store = open_store(store_url, key_prefix=key_prefix)
        before = store.read_user(PROBE_USER)
        assert before is not None, "the first run wrote every user"
        log = (workdir / "flow.log").open("wb")
        argv = [*_flow_argv(recovery), *args.flow_arg]
        start = time.perf_counter()
        child = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        first_write = None
        rss = hwm = 0
        deadline = start + args.timeout
        dumps = sorted(args.dumps) if users > 2 else []
        while time.perf_counter() < deadline and child.poll() is None:
            if dumps and time.perf_counter() - start >= dumps[0]:
                # Where the resume spends its time: the flow's stacks, Bytewax's Rust included.
                print(f"--- py-spy dump at {dumps.pop(0):.0f} s")
                spy = ["py-spy", "dump", "--native", "--pid", str(child.pid)]
                out = subprocess.run(spy, capture_output=True, text=True)
                frames = [ln.strip() for ln in out.stdout.splitlines()[3:] if ln.strip()]
                print("\n".join(f.split(" (")[0][:160] for f in frames[:14]) or out.stderr)
            now = store.read_user(PROBE_USER)
            if now is not None and (now.newest_ingest_ms or 0) > (before.newest_ingest_ms or 0):
                first_write = time.perf_counter() - start
                break
            time.sleep(0.02)
        if first_write is not None:
            rss, hwm = _memory_kib(child.pid)
        child.terminate()
        child.wait(timeout=60)
        store.close()
        log.close()
        if first_write is None:
            tail = (workdir / "flow.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"no write within {args.timeout} s (exit {child.returncode}):\n{tail}")
        return {
            "users": users,
            "recovery_mb": size / 1e6,
            "fill_s": fill_s,
            "first_write_s": first_write,
            "rss_mib": rss / 1024,
            "hwm_mib": hwm / 1024,
        }
    finally:
        delete_topics(bootstrap, prefix)
        delete_keys(store_url, key_prefix)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--templates", type=int, default=300)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument(
        "--partitions", type=int, default=64, help="recovery partitions (flow's default: 64)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--bootstrap")
    parser.add_argument("--store-url")
    parser.add_argument(
        "--dumps",
        type=float,
        nargs="*",
        default=[],
        help="seconds after spawn at which to print the flow's stacks (`py-spy dump --native`; "
        "`pip install py-spy`)",
    )
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--flow-arg",
        action="append",
        default=[],
        help="extra argument of the resumed flow, e.g. --flow-arg=--catchup-flush-interval=0.1 "
        "(the probe event waits in Kafka during the resume, so the flow sees a backlog and "
        "coalesces for a quarter of how far behind it is, up to 10 s)",
    )
    args = parser.parse_args()
    bootstrap, store_url = _endpoints(args)

    t = time.perf_counter()
    templates = _templates(args.templates, args.days, args.seed)
    sizes = sorted(len(b) for b in templates)
    print(
        f"{args.templates} template users x {args.days} days folded in "
        f"{time.perf_counter() - t:.1f} s; snapshot bytes median {sizes[len(sizes) // 2]:,}, "
        f"max {sizes[-1]:,}"
    )
    results = []
    if not args.no_baseline:
        results.append(_one(args, bootstrap, store_url, templates, 2))
    results.append(_one(args, bootstrap, store_url, templates, args.users))
    for r in results:
        print(
            f"resumed users {r['users']:>7,}: recovery {r['recovery_mb']:8.1f} MB "
            f"(built in {r['fill_s']:.1f} s), spawn -> first write {r['first_write_s']:6.2f} s, "
            f"RSS {r['rss_mib']:7.1f} MiB (peak {r['hwm_mib']:7.1f} MiB)"
        )
    if len(results) == 2 and results[1]["rss_mib"]:
        base, big = results
        per_user = (big["rss_mib"] - base["rss_mib"]) * 1024 * 1024 / (big["users"] - base["users"])
        peak = (big["hwm_mib"] - base["hwm_mib"]) * 1024 * 1024 / (big["users"] - base["users"])
        print(f"memory per resumed user: {per_user:,.0f} bytes (peak {peak:,.0f} bytes)")
        verdict = "met" if big["first_write_s"] <= TARGET_S else "NOT met"
        print(f"target: first write within {TARGET_S:.0f} s of spawn: {verdict}")


if __name__ == "__main__":
    main()
