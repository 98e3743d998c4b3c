"""`bench/serve.py`'s API side: the API process and its metrics, the in-process breakdown
of one request, the batch-read and ledger phases, and clean-up."""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

import httpx  # noqa: E402

from bench.serve_load import pct  # noqa: E402
from connectors import clock  # noqa: E402
from connectors.store import open_store  # noqa: E402

# -- the API process -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_api(
    env: dict[str, str],
    port: int,
    log_path: Path,
    profile: Path | None = None,
    tree: Path | None = None,
) -> subprocess.Popen[bytes]:
    """The API of this tree, or of the source tree `tree` (its own `.venv`'s Python, the tree
    first on `PYTHONPATH`), answering on `port`."""
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    argv = ["serve", "--port", str(port), "--log-level", "warning"]
    if profile:
        # uvicorn re-raises SIGTERM after its shutdown with the handler it found at start;
        # this one dumps the profile first (`python -m cProfile` would die without writing).
        code = (
            "import cProfile, signal, sys\n"
            "prof = cProfile.Profile()\n"
            "def stop(*_):\n"
            f"    prof.disable(); prof.dump_stats({str(profile)!r}); sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, stop)\n"
            "from oo_features.cli import main\n"
            f"prof.enable(); main({argv!r})\n"
        )
        cmd = [sys.executable, "-c", code]
    else:
        cmd = [sys.executable, "-m", "oo_features.cli", *argv]
    if tree is not None:
        cmd[0] = str(tree / ".venv" / "bin" / "python")
        env = {**env, "PYTHONPATH": str(tree)}
    proc = subprocess.Popen(
        cmd,
        cwd=tree or ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return wait_until_answers(proc, f"http://127.0.0.1:{port}/ready", log_path)


def wait_until_answers(
    proc: subprocess.Popen[bytes], url: str, log_path: Path, timeout_s: float = 60.0
) -> subprocess.Popen[bytes]:
    """`proc` (an API process) once `url` answers 200; RuntimeError naming the log if it exits
    or does not answer within `timeout_s` (then it is terminated)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited ({proc.returncode}); see {log_path}")
        try:
            if httpx.get(url, timeout=5, trust_env=False).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"the API did not answer {url} in time; see {log_path}")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(base_url: str) -> dict[str, float]:
    """The /metrics samples this bench reads, by name + labels."""
    text = httpx.get(base_url + "/metrics", timeout=5, trust_env=False).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


def delta(
    a: dict[str, float], b: dict[str, float], prefix: str, must: str = ""
) -> dict[str, float]:
    return {k: b[k] - a.get(k, 0.0) for k in b if k.startswith(prefix) and must in k}


def hist_summary(d: dict[str, float], name: str, must: str) -> str:
    count = sum(v for k, v in d.items() if k.startswith(name + "_count") and must in k)
    total = sum(v for k, v in d.items() if k.startswith(name + "_sum") and must in k)
    le5 = sum(
        v
        for k, v in d.items()
        if k.startswith(name + "_bucket") and must in k and 'le="0.005"' in k
    )
    le10 = sum(
        v for k, v in d.items() if k.startswith(name + "_bucket") and must in k and 'le="0.01"' in k
    )
    if not count:
        return "no samples"
    return (
        f"n {count:.0f}, mean {total / count * 1000:.2f} ms, <=5 ms {le5 / count:.1%}, "
        f"<=10 ms {le10 / count:.1%}"
    )


# -- in-process breakdown --------------------------------------------------------------------


def breakdown(store_url: str, key_prefix: str, ids: list[str], n: int) -> dict[str, tuple]:
    from serving.api.deps import get_manifests
    from serving.api.models import FeaturesOut
    from serving.api.routes.users import _agent_out
    from serving.prompt import assemble_prompt
    from serving.tips import eligible_agents, fresh_snippets

    store = open_store(store_url, key_prefix=key_prefix)
    registered = get_manifests()
    rng = random.Random(7)
    t_read, t_build, t_prompt = [], [], []
    for _ in range(n):
        uid = rng.choice(ids)
        now = clock.now_ms()
        t = time.perf_counter()
        user = store.read_user(uid, now_ms=now)
        t_read.append((time.perf_counter() - t) * 1000)
        assert user is not None
        t = time.perf_counter()
        out = FeaturesOut(
            user_id=uid,
            agents={
                a.agent_id: _agent_out(a, now_ms=now) for a in eligible_agents(user, registered)
            },
            feedback=user.feedback,
        )
        out.model_dump_json()
        t_build.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        assemble_prompt(
            fresh_snippets(eligible_agents(user, registered), registered, now_ms=now), None
        )
        t_prompt.append((time.perf_counter() - t) * 1000)
    store.close()
    return {
        name: (statistics.median(v), pct(v, 99))
        for name, v in (
            ("store.read_user (Redis RTT + decode)", t_read),
            ("FeaturesOut build + JSON", t_build),
            ("eligible/fresh snippets + assemble_prompt", t_prompt),
        )
    }


# -- cleanup ---------------------------------------------------------------------------------


def cleanup(store_url: str, key_prefix: str, bootstrap: str | None, topic_prefix: str) -> None:
    from oo_features.services import delete_keys, delete_topics

    delete_keys(store_url, f"{key_prefix}:")
    if bootstrap:
        delete_topics(bootstrap, topic_prefix, timeout_s=30)


# -- issue 12: batch reads and the tip ledger's cost ------------------------------------------


def loop_phases(
    args: argparse.Namespace,
    env: dict[str, str],
    tmp: Path,
    base: str,
    api: subprocess.Popen[bytes],
    run: Any,
) -> dict[str, Any]:
    """Batch of 100 at 20/s (with a /health baseline); then recommend at `args.ledger_rate`
    on three fresh APIs, one with the ledger on and two with it off (`bench.serve_ledger`),
    and a fourth with the ledger on from the tree `args.ledger_tree_a` when given."""
    from bench.serve_ledger import ledger_phases

    out: dict[str, Any] = {}
    print("L1. POST /v1/features/batch, 100 users, 20/s")
    out["health_20"] = run("health", 20, args.duration)
    out["batch_20"] = run("batch", 20, args.duration)
    if args.rounds == 0:
        return out
    # Three fresh APIs, started and warmed up alike, so that the arms differ in their
    # configuration only (not in what the batch phases left in one process's heap).
    off_env = {**env, "OO_LEDGER_RETENTION_DAYS": "0"}
    apis: dict[str, subprocess.Popen[bytes]] = {}
    try:
        urls, pids = {}, {}
        tree_a = getattr(args, "ledger_tree_a", None)
        arms = ("on", "off", "ctl", *(("on-A",) if tree_a else ()))
        for arm in arms:
            port = free_port()
            arm_env = env if arm.startswith("on") else off_env
            apis[arm] = start_api(
                arm_env, port, tmp / f"api-ledger-{arm}.log", tree=tree_a if arm == "on-A" else None
            )
            urls[arm], pids[arm] = f"http://127.0.0.1:{port}", apis[arm].pid
        for arm in arms:
            run("recommend", 100, 3, url=urls[arm], pid=pids[arm])  # warm-up

        def ledger_cpu_s() -> tuple[float, float, float, float]:
            m = scrape(urls["on"])
            return (
                m.get("oo_ledger_worker_batch_cpu_seconds_sum", 0.0),
                m.get("oo_ledger_worker_tips_total", 0.0),
                m.get("oo_ledger_worker_batch_cpu_seconds_count", 0.0),
                m.get('oo_ledger_worker_batch_cpu_seconds_bucket{le="0.001"}', 0.0),
            )

        print(
            f"L2. POST /v1/recommend {args.ledger_rate:.0f}/s: ledger on / off / off (control)"
            + (f" / on from {tree_a} (on-A)" if tree_a else "")
            + f", {args.ledger_blocks} blocks of {args.ledger_phase_s:g} s phases"
        )
        out["ledger"] = ledger_phases(
            rate=args.ledger_rate,
            blocks=args.ledger_blocks,
            phase_s=args.ledger_phase_s,
            urls=urls,
            pids=pids,
            run=run,
            ledger_cpu_s=ledger_cpu_s,
        )
        d = out["ledger"]["ledger"]
        print(
            f"summary: batch p99 {out['batch_20']['p99']:.2f} ms (health baseline p99 "
            f"{out['health_20']['p99']:.2f}); the ledger adds {d['p99_diff_ms']:+.2f} ms to "
            f"recommend p99 (95 % CI over blocks {d['ci95_blocks'][0]:+.2f} to "
            f"{d['ci95_blocks'][1]:+.2f}; median of per-block differences "
            f"{d['median_block_diff_ms']:+.2f}); the control differs by "
            f"{out['ledger']['control']['p99_diff_ms']:+.2f} ms (median of per-block "
            f"differences {out['ledger']['control']['median_block_diff_ms']:+.2f}); "
            f"verdict: {out['ledger']['verdict']}"
        )
    finally:
        for proc in apis.values():
            proc.send_signal(signal.SIGTERM)
        for proc in apis.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    return out
