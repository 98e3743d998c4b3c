"""The demo behind `oo-features demo` (see `oo_features/commands/demo.py`)."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any


def _say(text: str) -> None:
    print(text, flush=True)


def _replay_file(event_log: Path, store_url: str, key_prefix: str, total: int) -> None:
    from bytewax.testing import run_main

    from connectors import bytewax_io
    from connectors.jsonl import rejects_path_for
    from flows.features_flow import build_flow
    from flows.runtime import tune_gc

    flow = build_flow(
        store_url=store_url,
        key_prefix=key_prefix,
        event_log=event_log,
        rejects_path=rejects_path_for(event_log),
        stop_at_end=True,
        recovery=False,  # run_main without a recovery store
    )
    errors: list[BaseException] = []
    tune_gc()

    def target() -> None:
        try:
            run_main(flow)
        except BaseException as exc:  # surfaced below, in the main thread
            errors.append(exc)

    start = bytewax_io.LINES_READ[0]
    worker = threading.Thread(target=target, name="oo-demo-flow", daemon=True)
    worker.start()
    _progress(worker, lambda: bytewax_io.LINES_READ[0] - start, total)
    if errors:
        raise RuntimeError(f"the flow failed: {errors[0]}") from errors[0]


def _progress(worker: threading.Thread, done: Any, total: int) -> None:
    if sys.stdout.isatty():
        from oo_features.progress import progress_bar

        with progress_bar("replaying events through the flow", total, show=True) as bar:
            while worker.is_alive():
                bar.update(done())
                worker.join(0.2)
            bar.update(total)
    else:
        last = -1
        while worker.is_alive():
            worker.join(1.0)
            pct = int(100 * done() / max(total, 1))
            if pct // 10 != last // 10:
                _say(f"  replayed {done()}/{total} events ({pct}%)")
                last = pct


def _replay_kafka(
    event_log: Path, bootstrap: str, store_url: str, key_prefix: str, topic_prefix: str
) -> None:
    import subprocess

    from connectors.codec import from_json
    from connectors.kafka import EventProducer
    from oo_features.errors import CommandError

    producer = EventProducer(bootstrap=bootstrap, topic_prefix=topic_prefix)
    queued = 0
    with event_log.open() as handle:
        for line in handle:
            producer.publish(from_json(line))
            queued += 1
    # Waits while delivery reports keep coming (a loaded broker is slow, not gone), and the
    # flow runs only over a history Kafka confirmed whole: a demo that went on without some
    # events would show features of another history than the one it wrote.
    report = producer.flush()
    producer.close()
    if report.failed or report.published != queued:
        event_id, reason = report.failed[0] if report.failed else ("?", "no delivery report")
        raise CommandError(
            f"Kafka did not confirm {queued - report.published} of {queued} events "
            f"(first: {event_id}: {reason}); nothing was computed"
        )
    _say(f"  published {report.published} events to Kafka at {bootstrap}")
    cmd = [
        sys.executable,
        "-m",
        "oo_features.cli",
        "flow",
        "--stop-at-end",
        "--bootstrap",
        bootstrap,
        "--store-url",
        store_url,
        "--key-prefix",
        key_prefix,
        "--topic-prefix",
        topic_prefix,
    ]
    # 1: some events were rejected (they are in the dead letters); 2: it could not run.
    if subprocess.run(cmd, check=False).returncode not in (0, 1):
        raise CommandError("the flow did not run; see its error above")


def _pick_user(store: Any, user_ids: list[str]) -> str:
    def score(user_id: str) -> int:
        user = store.read_user(user_id)
        if user is None:
            return -1
        return sum(1 for a in user.agents.values() if a.snippet)

    return max(sorted(user_ids)[:50], key=score)


def demo_namespace(key_prefix: str, topic_prefix: str) -> tuple[str, str]:
    """A run's own store key prefix and topic prefix: `<key_prefix>-demo-<run>` and
    `<topic_prefix>demo-<run>.`, where `<run>` is the local time to the second and six random
    hex digits, so two runs started in the same second never share topics or keys."""
    run = f"{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"
    return f"{key_prefix}-demo-{run}", f"{topic_prefix}demo-{run}."


def run_demo(args: argparse.Namespace) -> int:
    import httpx
    import uvicorn
    from pydantic import SecretStr

    from connectors.settings import ConnectorSettings
    from connectors.store import open_store
    from oo_features.generate import generate_lines
    from serving.app import create_app
    from serving.settings import Settings

    conf = ConnectorSettings()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    embedded = conf.kafka_bootstrap is None
    store_url = conf.store_url
    if embedded and store_url == ConnectorSettings.model_fields["store_url"].default:
        db = workdir / "features.db"
        for stale in workdir.glob("features.db*"):
            stale.unlink()
        store_url = f"sqlite:///{db}"

    event_log = workdir / "events.jsonl"
    _say(f"1/4 generating {args.users} users x {args.days} days of history (seed {args.seed})")
    lines = 0
    with event_log.open("w") as out:
        for line in generate_lines(args.users, args.days, args.seed):
            out.write(line + "\n")
            lines += 1
    _say(f"  wrote {lines} events to {event_log}")

    key_prefix, topic_prefix = conf.key_prefix, conf.topic_prefix
    if not embedded:
        # Its own topics and keys: the generated history has the same users and event ids
        # on every run, so shared ones would mix this run's events with an earlier one's.
        key_prefix, topic_prefix = demo_namespace(key_prefix, topic_prefix)
        _say(
            f"  on the real services, in a namespace of its own: topics {topic_prefix}*, "
            f"store keys {key_prefix}:*"
        )
    _say(
        "2/4 running the feature flow "
        + ("from the event log into " if embedded else "on Kafka into ")
        + store_url
    )
    started = time.perf_counter()
    if embedded:
        _replay_file(event_log, store_url, key_prefix, lines)
    else:
        _replay_kafka(event_log, conf.kafka_bootstrap or "", store_url, key_prefix, topic_prefix)
    _say(f"  done in {time.perf_counter() - started:.1f} s")

    store = open_store(store_url, key_prefix=key_prefix)
    user_ids = store.user_ids()
    if not user_ids:
        _say("error: the flow wrote no users; see the rejects file next to the event log")
        return 1
    user_id = _pick_user(store, user_ids)
    store.close()

    token = os.environ.get("OO_API_TOKEN") or secrets.token_urlsafe(24)
    settings = Settings(
        store_url=store_url,
        api_token=SecretStr(token),
        feedback_log=workdir / "feedback.jsonl",
        host="127.0.0.1",
        key_prefix=key_prefix,
        topic_prefix=topic_prefix,
        **({} if args.port is None else {"port": args.port}),  # else OO_PORT, else 8000
    )
    port = settings.port
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="oo-demo-api", daemon=True)
    _say(f"3/4 starting the API on http://127.0.0.1:{port}")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            _say(f"error: the API did not start on 127.0.0.1:{port} (port in use?)")
            return 1
        time.sleep(0.05)

    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, trust_env=False, timeout=10) as client:
        features = client.get(f"/v1/users/{user_id}/features").json()
        tip = client.post("/v1/recommend", json={"user_id": user_id}).json()
    _say(f"4/4 user {user_id}")
    for agent_id, agent in sorted(features.get("agents", {}).items()):
        params = {name: p["value"] for name, p in agent["params"].items()}
        _say(f"  {agent_id}: {json.dumps(params)}")
        if agent.get("snippet"):
            _say(f'    "{agent["snippet"]["text"]}"')
    _say("")
    if tip.get("tip"):
        why = f" (fallback: {tip.get('fallback_reason')})" if tip.get("fallback") else ""
        _say(f"  tip{why}: {tip['tip']['text']}")
    else:
        _say(f"  no tip: {tip.get('reason')}")
    _say("")
    _say(f"The API is at {base} (OpenAPI: {base}/openapi.json). Try:")
    _say(f"  curl -H 'Authorization: Bearer {token}' {base}/v1/users/{user_id}/features")
    _say(f"Freshness dashboard: {base}/freshness#token={token}")
    if args.once:
        server.should_exit = True
        thread.join(10)
        return 0
    _say("Press Ctrl-C to stop.")
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        server.should_exit = True
        thread.join(10)
    return 0
