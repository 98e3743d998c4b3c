"""`bench/serve.py --loop`'s tip-ledger phases: what the ledger adds to `POST /v1/recommend`
p99, measured finely enough to resolve a millisecond (issue 12; ADR 0040).

Three API processes of the same tree, started fresh for these phases and warmed up alike,
answer recommends: "on" (the ledger on), "off" and "ctl" (both with
`OO_LEDGER_RETENTION_DAYS=0`: "ctl" is the same-config control, so "ctl - off" shows what two
identical APIs differ by in this very run). The load runs in many short
phases (`--ledger-phase-s`, 2 s by default): `--ledger-blocks` blocks, each one phase of
every arm, in the 6 orders of the three arms in turn, so every arm runs equally often before
and after every other one and the machine's slow drift falls on all arms alike.

With `--ledger-tree-a DIR` a fourth API, "on-A", runs the ledger on from another source tree
(ADR 0058): the blocks then take the four arms in the orders of a balanced Latin square (each
arm once in each place and once right after each other arm, every 4 blocks), and the report
adds "on-A - off" (that tree's ledger cost, with its verdict) and "on - on-A".

Reported: each arm's p99 over all its requests; "on - off" and "ctl - off" with 95 %
confidence intervals from two bootstraps: over blocks (paired: a resample takes the same
blocks from both arms, so what a block's moment of the machine did counts as the noise it
is) and over requests (each arm's requests resampled alone, which ignores that requests of
one phase share its moment: narrower, and optimistic). The median of the per-block p99
differences, each arm's API CPU per request, and the ledger's own work from the "on" API's
`oo_ledger_worker_cpu_seconds_total` (CPU of its worker thread) per tip.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

ARMS = ("off", "on", "ctl")
ORDERS = list(itertools.permutations(ARMS))
ARMS_A = (*ARMS, "on-A")
ORDERS_A = [tuple(ARMS_A[(i + k) % 4] for i in (0, 1, 3, 2)) for k in range(4)]
"""A balanced Latin square of the four arms (Williams): each arm in each place once, and
right after each other arm once."""
BOOTSTRAP_RESAMPLES = 2000


def p99(values: np.ndarray) -> float:
    """Nearest-rank p99 (the rule of `bench.serve_load.pct`)."""
    n = len(values)
    if n == 0:
        return math.nan
    k = min(n - 1, max(0, math.ceil(0.99 * n) - 1))
    return float(np.partition(values, k)[k])


def p99_difference(
    base: Sequence[np.ndarray], other: Sequence[np.ndarray], *, seed: int = 12
) -> dict[str, Any]:
    """p99(other) - p99(base) over all requests, with 95 % intervals from a paired block
    bootstrap and a request bootstrap (see the module docstring), and the median of the
    per-block p99 differences (robust to the one phase the machine stalled) with its paired
    block-bootstrap interval; p50 likewise. Blocks are paired by index."""
    rng = np.random.default_rng(seed)
    a_all, b_all = np.concatenate(base), np.concatenate(other)
    blocks = len(base)
    per_block = np.array([p99(o) - p99(b) for b, o in zip(base, other, strict=True)])
    by_block, by_request, median_by_block, p50_by_block = [], [], [], []
    for _ in range(BOOTSTRAP_RESAMPLES):
        pick = rng.integers(0, blocks, blocks)
        a = np.concatenate([base[i] for i in pick])
        b = np.concatenate([other[i] for i in pick])
        by_block.append(p99(b) - p99(a))
        p50_by_block.append(float(np.median(b) - np.median(a)))
        median_by_block.append(float(np.median(per_block[pick])))
        ra = a_all[rng.integers(0, len(a_all), len(a_all))]
        rb = b_all[rng.integers(0, len(b_all), len(b_all))]
        by_request.append(p99(rb) - p99(ra))

    def ci(values: list[float]) -> list[float]:
        return [float(x) for x in np.percentile(values, [2.5, 97.5])]

    return {
        "p99_diff_ms": p99(b_all) - p99(a_all),
        "ci95_blocks": ci(by_block),
        "ci95_requests": ci(by_request),
        "median_block_diff_ms": float(np.median(per_block)),
        "median_block_diff_ci95": ci(median_by_block),
        "p50_diff_ms": float(np.median(b_all) - np.median(a_all)),
        "p50_diff_ci95": ci(p50_by_block),
    }


TARGET_MS = 1.0
"""Issue 12: the ledger adds at most this to `POST /v1/recommend` p99 at 200/s."""


def verdict(ledger: dict[str, Any], control: dict[str, Any], target_ms: float = TARGET_MS) -> str:
    """Whether this run decides the target, from the 95 % intervals of the median of per-block
    p99 differences (paired block bootstrap; robust to one stalled phase): "meets" when the
    ledger's whole interval is at most `target_ms`, "misses" when it is all above it, else
    "undecided" (the interval straddles the target: more blocks or a quieter machine). A
    control whose own interval lies entirely beyond `target_ms` from zero means the machine,
    not the ledger, moved this run's numbers: also "undecided".

    >>> d = {"median_block_diff_ms": 0.4, "median_block_diff_ci95": [-0.2, 0.9]}
    >>> c = {"median_block_diff_ms": 0.1, "median_block_diff_ci95": [-0.5, 0.6]}
    >>> verdict(d, c).split(":")[0]
    'meets'
    >>> verdict({**d, "median_block_diff_ci95": [0.3, 1.6]}, c).split(":")[0]
    'undecided'
    >>> verdict({**d, "median_block_diff_ci95": [1.2, 2.6]}, c).split(":")[0]
    'misses'
    >>> verdict(d, {**c, "median_block_diff_ci95": [1.1, 3.0]}).split(":")[0]
    'undecided'
    """
    lo, hi = ledger["median_block_diff_ci95"]
    c_lo, c_hi = control["median_block_diff_ci95"]
    span = (
        f"median of per-block differences {ledger['median_block_diff_ms']:+.2f} ms, "
        f"95 % CI [{lo:+.2f}, {hi:+.2f}]"
    )
    if c_lo > target_ms or c_hi < -target_ms:
        return (
            f"undecided: the control differs from 'off' by more than {target_ms:g} ms on its own "
            f"(CI [{c_lo:+.2f}, {c_hi:+.2f}]): the machine's noise, not the ledger; {span}"
        )
    if hi <= target_ms:
        return f"meets: at most {target_ms:g} ms ({span})"
    if lo > target_ms:
        return f"misses: more than {target_ms:g} ms ({span})"
    return (
        f"undecided: the CI straddles {target_ms:g} ms ({span}); more blocks or a quieter "
        "machine can decide it"
    )


def show_difference(name: str, d: dict[str, Any]) -> str:
    def span(lo_hi: list[float]) -> str:
        return f"[{lo_hi[0]:+.2f}, {lo_hi[1]:+.2f}]"

    return (
        f"  {name:<17} p99 {d['p99_diff_ms']:+.2f} ms, 95 % CI over blocks "
        f"{span(d['ci95_blocks'])} (over requests {span(d['ci95_requests'])}, too narrow: "
        f"it ignores the phases); median of per-block p99 differences "
        f"{d['median_block_diff_ms']:+.2f} {span(d['median_block_diff_ci95'])}; p50 "
        f"{d['p50_diff_ms']:+.2f} {span(d['p50_diff_ci95'])}"
    )


def ledger_phases(
    *,
    rate: float,
    blocks: int,
    phase_s: float,
    urls: dict[str, str],
    pids: dict[str, int],
    run: Callable[..., dict[str, Any]],
    ledger_cpu_s: Callable[[], tuple[float, float, float, float]],
) -> dict[str, Any]:
    """The phases and the report. `run(kind, rate, duration, url=, pid=, keep_lat=True)` is
    `bench/serve.py`'s phase runner; `ledger_cpu_s()` the "on" API's ledger worker so far:
    CPU seconds, tips, batches, and batches that took at most 1 ms of CPU."""
    arms, orders = (ARMS_A, ORDERS_A) if "on-A" in urls else (ARMS, ORDERS)
    lat: dict[str, list[np.ndarray]] = {arm: [] for arm in arms}
    cpu: dict[str, list[float]] = {arm: [] for arm in arms}
    before = ledger_cpu_s()
    for block in range(blocks):
        order = orders[block % len(orders)]
        shown = []
        for arm in order:
            r = run("recommend", rate, phase_s, url=urls[arm], pid=pids[arm], keep_lat=True)
            lat[arm].append(np.asarray(r.pop("lat"), dtype=float))
            cpu[arm].append(r["api_cpu_ms_per_req"])
            shown.append(f"{arm} {p99(lat[arm][-1]):6.2f}")
        print(f"  block {block + 1:>2} ({','.join(order)}): p99 " + ", ".join(shown), flush=True)
    cpu_s, tips, batches, within_1ms = (b - a for a, b in zip(before, ledger_cpu_s(), strict=True))
    out: dict[str, Any] = {
        "blocks": blocks,
        "phase_s": phase_s,
        "rate": rate,
        "p99_ms": {arm: p99(np.concatenate(lat[arm])) for arm in arms},
        "p50_ms": {arm: float(np.median(np.concatenate(lat[arm]))) for arm in arms},
        "requests": {arm: int(sum(len(x) for x in lat[arm])) for arm in arms},
        "api_cpu_ms_per_req": {arm: statistics.median(cpu[arm]) for arm in arms},
        "ledger": p99_difference(lat["off"], lat["on"]),
        "control": p99_difference(lat["off"], lat["ctl"]),
        "ledger_worker": {
            "tips": tips,
            "batches": batches,
            "cpu_ms_per_tip": cpu_s * 1000 / tips if tips else math.nan,
            "cpu_ms_per_batch": cpu_s * 1000 / batches if batches else math.nan,
            "batches_within_1ms_cpu": within_1ms / batches if batches else math.nan,
        },
    }
    print(
        "  p99 over all requests: "
        + ", ".join(f"{a} {out['p99_ms'][a]:.2f} ms (n {out['requests'][a]})" for a in arms)
        + "; p50: "
        + ", ".join(f"{a} {out['p50_ms'][a]:.2f}" for a in arms)
    )
    print(show_difference("ledger on - off", out["ledger"]))
    print(show_difference("control ctl - off", out["control"]))
    out["verdict"] = verdict(out["ledger"], out["control"])
    print(f"  verdict: {out['verdict']}")
    if "on-A" in arms:
        out["ledger_a"] = p99_difference(lat["off"], lat["on-A"])
        out["on_vs_a"] = p99_difference(lat["on-A"], lat["on"])
        print(show_difference("tree A on-A - off", out["ledger_a"]))
        print(show_difference("on - on-A", out["on_vs_a"]))
        out["verdict_a"] = verdict(out["ledger_a"], out["control"])
        print(f"  verdict of tree A: {out['verdict_a']}")
    print(
        "  API CPU per request (median of phases): "
        + ", ".join(f"{a} {out['api_cpu_ms_per_req'][a]:.2f} ms" for a in arms)
    )
    w = out["ledger_worker"]
    print(
        f"  the ledger's own CPU (its process's with a Redis store the API opens, ADR 0053; "
        f"else its worker thread's, ADR 0046): "
        f"{w['cpu_ms_per_tip']:.3f} ms a tip, "
        f"{w['cpu_ms_per_batch']:.2f} ms a batch ({w['tips']:.0f} tips in {w['batches']:.0f} "
        f"batches; {w['batches_within_1ms_cpu']:.0%} of batches within 1 ms)"
    )
    return out
