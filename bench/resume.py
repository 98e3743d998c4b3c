"""Resume benchmark: `oo-features flow --recovery-dir` over the recovery state of many users.

What it measures (issue 10, "Speed and size"): the time from spawning
`oo-features flow --recovery-dir DIR` to its first store write after resuming, and the flow's
memory per resumed user.

How the recovery state is built (a real Bytewax recovery store, written the way Bytewax
writes it):
  1. `--templates` generator users with `--days` of history each are folded into `UserState`s
     and snapshotted by the flow's own `UserLogic.snapshot()` (the bytes Bytewax stores);
  2. a real flow runs once over a topic pair holding one event, with `--recovery-dir DIR`, so
     DIR holds Bytewax's partitions, the source's offsets and a committed epoch;
  3. `--users` rows are added to DIR's `snaps` table for the `fold_user_state` step at that
     epoch, user `u{i:05d}` getting template `i % templates` with its user id rewritten (the
     generator's ids have the same length, so the pickle stays valid);
  4. one new event for a resumed user (`u00001`) is published;
  5. the flow is spawned in tail mode; this process polls the store until that user's write
     lands, reads the flow's resident memory (`/proc/PID/status` VmRSS, VmHWM) and stops it.
The same is done with one resumed user for the baseline memory; per user = difference / users.

    .venv/bin/python bench/resume.py                       # 100,000 users, 300 templates, 90 days
    .venv/bin/python bench/resume.py --users 10000         # quicker
    .venv/bin/python bench/resume.py --profile             # + py-spy of the resumed flow

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

from connectors import topics  # noqa: E402
from connectors.codec import from_json  # noqa: E402
from connectors.folding import Pending, fold_batch  # noqa: E402
from connectors.kafka import EventProducer, ensure_topics  # noqa: E402
from connectors.records import Accepted  # noqa: E402
from connectors.store import open_store  # noqa: E402
from features.state import UserState  # noqa: E402
from flows.features_flow import UserLogic  # noqa: E402
from oo_features.localservices import delete_keys, delete_topics  # noqa: E402

STEP = "oo_features.fold_user_state"
PROBE_USER = "u00001"
TARGET_S = 10.0


def _endpoints(args: argparse.Namespace) -> tuple[str, str]:
    bootstrap = args.bootstrap or os.environ.get("OO_KAFKA_BOOTSTRAP")
    store_url = args.store_url or os.environ.get("OO_STORE_URL")
    if not bootstrap or not store_url or not store_url.startswith("redis"):
        from oo_features import localservices

        found = localservices.running_endpoints() or localservices.up(echo=print)
        bootstrap = bootstrap or found.kafka_bootstrap
        if not store_url or not store_url.startswith("redis"):
            store_url = found.redis_url
    return bootstrap, store_url


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
    """Add `users` user snapshots to the (already initialised) recovery partition; returns
    (epoch, bytes written)."""
    parts = sorted(recovery.glob("*.sqlite3"))
    assert len(parts) == 1, f"expected one recovery partition (1 worker); got {parts}"
    conn = sqlite3.connect(parts[0])
    (epoch,) = conn.execute("SELECT MAX(snap_epoch) FROM snaps").fetchone()
    total = 0

    def rows():
        nonlocal total
        for i in range(users):
            t = i % len(templates)
            blob = templates[t].replace(f"u{t:05d}".encode(), f"u{i:05d}".encode())
            ser = pickle.dumps(blob, protocol=4)  # how Bytewax serialises a snapshot
            total += len(ser)
            yield (STEP, f"u{i:05d}", epoch, ser)

    with conn:
        conn.executemany(
            "INSERT OR REPLACE INTO snaps (step_id, state_key, snap_epoch, ser_change) "
            "VALUES (?, ?, ?, ?)",
            rows(),
        )
    conn.close()
    return epoch, total


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
            [prefix + t for t in (topics.SIGNALS, topics.FEEDBACK, topics.DEADLETTER)],
            partitions=4,
        )
        producer = EventProducer(bootstrap=bootstrap, topic_prefix=prefix)
        producer.publish(_event("u99999", 0))  # type: ignore[arg-type]
        assert producer.flush(30).published == 1
        subprocess.run(
            [*_flow_argv(recovery), "--stop-at-end"], env=env, check=True, capture_output=True
        )
        t = time.perf_counter()
        epoch, size = _fill_recovery(recovery, templates, users)
        fill_s = time.perf_counter() - t

        producer.publish(_event(PROBE_USER, 1))  # type: ignore[arg-type]
        assert producer.flush(30).published == 1
        producer.close()
        store = open_store(store_url, key_prefix=key_prefix)
        log = (workdir / "flow.log").open("wb")
        argv = _flow_argv(recovery)
        if args.profile:
            argv = ["py-spy", "record", "-o", str(args.profile), "--subprocesses", "--", *argv]
        start = time.perf_counter()
        child = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        first_write = None
        rss = hwm = 0
        deadline = start + args.timeout
        while time.perf_counter() < deadline and child.poll() is None:
            if store.read_user(PROBE_USER) is not None:
                first_write = time.perf_counter() - start
                break
            time.sleep(0.02)
        if first_write is not None and not args.profile:
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
            "epoch": epoch,
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
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--bootstrap")
    parser.add_argument("--store-url")
    parser.add_argument("--profile", type=Path, help="py-spy flame graph (SVG) of the big run")
    parser.add_argument("--no-baseline", action="store_true")
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
        profile, args.profile = args.profile, None
        results.append(_one(args, bootstrap, store_url, templates, 2))
        args.profile = profile
    results.append(_one(args, bootstrap, store_url, templates, args.users))
    for r in results:
        print(
            f"resumed users {r['users']:>7,}: recovery {r['recovery_mb']:8.1f} MB "
            f"(filled in {r['fill_s']:.1f} s), spawn -> first write {r['first_write_s']:6.2f} s, "
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
