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
  4. the planner statistic a flow writes (ADR 0024) is dropped, so the directory is what an
     older flow left; this is the pristine copy each measured resume starts from;
  5. per resume: a fresh copy of it, one new event for a resumed user (`u00001`), the flow
     spawned in tail mode; this process polls the store until that user's write lands, reads
     the flow's CPU time (`/proc/PID/stat`) and resident memory (`/proc/PID/status` VmRSS,
     VmHWM) and stops it.
With `--base-tree DIR` (a checkout of older code) the flows of that tree and of this one resume
the same state in turn, `--trials` times each: the per-trial ratios are the comparison that
survives a shared machine. The same is done with two resumed users for the baseline memory;
per user = difference / users.

    .venv/bin/python bench/resume.py                       # 100,000 users, 300 templates, 90 days
    .venv/bin/python bench/resume.py --users 10000         # quicker
    .venv/bin/python bench/resume.py --partitions 1        # one recovery partition
    .venv/bin/python bench/resume.py --trials 3 --base-tree /tmp/base   # A/B, interleaved
    .venv/bin/python bench/resume.py --dumps 5 10 20       # + py-spy stacks at those seconds

Kafka/Redis: `--bootstrap`/`--store-url`, else $OO_KAFKA_BOOTSTRAP/$OO_STORE_URL, else the local
services (started if needed). Topics, keys and the recovery directory are deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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


def _flow_argv(recovery: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "oo_features.cli",
        "flow",
        "--recovery-dir",
        str(recovery),
        *extra,
    ]


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


def _cpu_s(pid: int) -> float:
    """CPU time (user + system) of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _unsteer(recovery: Path) -> None:
    """Drop the planner statistics a flow wrote (ADR 0024): the directory then looks like one
    made by an older flow, and each measured flow starts from the same files."""
    for part in recovery.glob("part-*.sqlite3"):
        with sqlite3.connect(part) as conn:
            conn.execute("DROP TABLE IF EXISTS sqlite_stat1")
        conn.close()


def _resume_once(
    args: argparse.Namespace,
    env: dict[str, str],
    tree: Path,
    pristine: Path,
    workdir: Path,
    store_url: str,
    key_prefix: str,
    producer: EventProducer,
    n: int,
) -> dict[str, float]:
    """Copy the pristine recovery directory, publish a probe event, spawn the flow of `tree`
    and measure spawn -> the probe's write (wall and the flow's CPU time) and its memory."""
    recovery = workdir / "recovery"
    shutil.rmtree(recovery, ignore_errors=True)
    shutil.copytree(pristine, recovery)
    store = open_store(store_url, key_prefix=key_prefix)
    before = store.read_user(PROBE_USER)
    assert before is not None, "the first run wrote every user"
    producer.publish(_event(PROBE_USER, n))  # type: ignore[arg-type]
    assert producer.flush(30).published == 1
    time.sleep(0.05)  # a later ingest time than any earlier probe's write
    log = (workdir / "flow.log").open("wb")
    tree_env = {**env, "PYTHONPATH": str(tree) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    # In the tree's directory: `python -m` puts the working directory first on sys.path.
    child = subprocess.Popen(
        _flow_argv(recovery, *args.flow_arg),
        env=tree_env,
        cwd=tree,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    recorder = None
    if args.profile:
        # The whole resume's stacks (Rust frames of Bytewax included), stopped at the write.
        profile = f"{args.profile}.{Path(tree).name}.{n}.txt"
        spy_argv = ["py-spy", "record", "--native", "--format", "raw", "-o", profile]
        recorder = subprocess.Popen([*spy_argv, "--pid", str(child.pid)], stdout=subprocess.DEVNULL)
    first_write = None
    rss = hwm = 0
    cpu = 0.0
    deadline = start + args.timeout
    dumps = sorted(args.dumps)
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
        cpu = _cpu_s(child.pid)
        rss, hwm = _memory_kib(child.pid)
    if recorder is not None:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(timeout=60)
    child.terminate()
    child.wait(timeout=60)
    store.close()
    log.close()
    if first_write is None:
        tail = (workdir / "flow.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"no write within {args.timeout} s (exit {child.returncode}):\n{tail}")
    return {
        "first_write_s": first_write,
        "cpu_s": cpu,
        "rss_mib": rss / 1024,
        "hwm_mib": hwm / 1024,
    }


def _one(
    args: argparse.Namespace, bootstrap: str, store_url: str, templates: list[bytes], users: int
) -> list[dict[str, Any]]:
    """Build the recovery state of `users` users once, then resume it `--trials` times per tree
    (this tree and `--base-tree`, alternating), each from a fresh copy."""
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
    pristine = workdir / "pristine"
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
            [*_flow_argv(pristine), "--stop-at-end", "--recovery-partitions", str(args.partitions)],
            env=env,
            check=True,
            capture_output=True,
        )
        _, size = _fill_recovery(pristine, templates, users)
        _unsteer(pristine)
        fill_s = time.perf_counter() - t
        trees = [("this tree", ROOT)]
        if args.base_tree:
            trees.insert(0, ("base", Path(args.base_tree).resolve()))
        results: list[dict[str, Any]] = []
        for trial in range(args.trials if users > 2 else 1):
            for name, tree in trees:
                r_run = _resume_once(
                    args,
                    env,
                    tree,
                    pristine,
                    workdir,
                    store_url,
                    key_prefix,
                    producer,
                    users + len(results),
                )
                r: dict[str, Any] = {
                    **r_run,
                    "users": users,
                    "recovery_mb": size / 1e6,
                    "fill_s": fill_s,
                    "trial": trial,
                    "tree": name,
                }
                print(
                    f"  {name:>9} trial {trial}: first write {r['first_write_s']:6.2f} s, "
                    f"flow CPU {r['cpu_s']:6.2f} s, RSS {r['rss_mib']:7.1f} MiB",
                    flush=True,
                )
                results.append(r)
        producer.close()
        return results
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
    parser.add_argument(
        "--profile",
        help="record each resume with `py-spy record --native` into PROFILE.<tree>.<n>.txt "
        "(collapsed stacks; `pip install py-spy`)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the 2-user run")
    parser.add_argument(
        "--trials", type=int, default=1, help="resumes per tree of the same recovery state"
    )
    parser.add_argument(
        "--base-tree",
        help="a checkout of the code before a change (`git worktree add /tmp/base REV`): its "
        "flow resumes the same state, alternating with this tree's, and the report gives the "
        "ratio of each pair",
    )
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
    small = [] if args.no_baseline else _one(args, bootstrap, store_url, templates, 2)
    big = _one(args, bootstrap, store_url, templates, args.users)
    first = big[0]
    print(
        f"resumed users {args.users:,}: recovery {first['recovery_mb']:.1f} MB in "
        f"{args.partitions} partitions (built in {first['fill_s']:.1f} s); load "
        f"{os.getloadavg()[0]:.1f} at the end"
    )
    medians: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(str(r["tree"]) for r in big):
        runs = [r for r in big if r["tree"] == name]
        medians[name] = {
            k: statistics.median(r[k] for r in runs) for k in ("first_write_s", "cpu_s")
        }
        print(
            f"{name:>9}: spawn -> first write median {medians[name]['first_write_s']:6.2f} s "
            f"(runs {', '.join(format(r['first_write_s'], '.2f') for r in runs)}), flow CPU median "
            f"{medians[name]['cpu_s']:6.2f} s, RSS {runs[-1]['rss_mib']:.0f} MiB"
        )
    if "base" in medians:
        base, this = medians["base"], medians["this tree"]
        pairs = [
            (a, b) for a, b in zip(big[::2], big[1::2], strict=True)
        ]  # (base, this) of the same trial, run one after the other
        ratio_wall = statistics.median(b["first_write_s"] / a["first_write_s"] for a, b in pairs)
        ratio_cpu = statistics.median(b["cpu_s"] / a["cpu_s"] for a, b in pairs)
        print(
            f"this tree / base, median of per-trial ratios: wall {ratio_wall:.2f}, "
            f"flow CPU {ratio_cpu:.2f} (medians: {this['first_write_s']:.2f} s vs "
            f"{base['first_write_s']:.2f} s)"
        )
    for r in small:
        print(f"{r['tree']:>9} with 2 users: first write {r['first_write_s']:.2f} s")
    this_small = [r for r in small if r["tree"] == "this tree"]
    this_big = [r for r in big if r["tree"] == "this tree"]
    if this_small and this_big:
        rss = statistics.median(r["rss_mib"] for r in this_big) - this_small[0]["rss_mib"]
        hwm = statistics.median(r["hwm_mib"] for r in this_big) - this_small[0]["hwm_mib"]
        per = 1024 * 1024 / (args.users - 2)
        print(f"memory per resumed user: {rss * per:,.0f} bytes (peak {hwm * per:,.0f} bytes)")
    verdict = "met" if medians["this tree"]["first_write_s"] <= TARGET_S else "NOT met"
    print(f"target: first write within {TARGET_S:.0f} s of spawn (median): {verdict}")


if __name__ == "__main__":
    main()
