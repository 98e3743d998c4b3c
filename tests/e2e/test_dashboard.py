"""The freshness dashboard in headless Chromium, on real numbers from a running engine.

Real Kafka and Redis, the real flow and the API under uvicorn; Debian's `chromium`
driven by playwright-core (`tests/browser/`). The page is opened with the token in
its `#token=` fragment, and the test reads back what it shows and compares it with
`GET /v1/freshness` and with what the test itself made happen:

1. users whose events the flow has written: every agent within SLA, OK, real lag
   percentiles, charts drawn from the history;
2. new events of some users, no flow: once they have waited longer than the
   shortest SLA the page shows BREACH for those agents, at most one check interval
   after the breach began, with the stale users in the worst table.

The page must read well from phone to desktop: at 1280 px and at 390 px wide nothing
overflows horizontally, and each lag chart draws the real lag (tens of milliseconds) at
a height a person can see against an SLA of 30 s to 5 min (a log scale), with the SLA
line on the chart.

Screenshots go to the test's tmp directory: `ok.png` (1280 px), `ok-390.png` (a phone)
and `breach.png`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from connectors.codec import from_json
from connectors.kafka import EventProducer
from features import registry
from serving.app import create_app
from serving.settings import Settings
from tests.browser.chromium import HeadlessChromium
from tests.cli import oo_features
from tests.fixtures_services import service_env
from tests.orchestrator_peer import ApiServer

TOKEN = "e2e-dashboard-token-0123456789"
CHECK_INTERVAL_S = 1.0
FRESH_USERS = [f"fresh-{i:02d}" for i in range(16)]
LATE_USERS = [f"late-{i}" for i in range(4)]  # their last events never reach the flow
# The page may lag the breach by one refresh (one check interval); this covers the
# request, the render and the test's own 100 ms polling.
RENDER_SLACK_S = 1.0
DESKTOP = (1280, 900)
PHONE = (390, 844)  # CSS pixels of a current phone in portrait


def task_done(event_id: str, user_id: str, when: datetime) -> Any:
    occurred = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return from_json(
        f'{{"eventId":"{event_id}","userId":"{user_id}","occurredAt":"{occurred}",'
        f'"utcOffsetMinutes":60,"taskCompleted":{{"taskId":"{event_id}","projectId":"p1"}}}}'
    )


def history(user_id: str, now: datetime) -> list[Any]:
    return [
        task_done(f"{user_id}-{d}-{h}", user_id, now - timedelta(days=d, hours=h))
        for d in range(1, 8)
        for h in (1, 5, 9)
    ]


def run_flow(env: dict[str, str]) -> None:
    oo_features("flow", "--stop-at-end", env=env, timeout=300)


# What the page shows of one agent: every number as the API's raw value (`data-value`)
# and as the text a person reads.
READ_AGENTS_JS = """
(() => {
  const out = {};
  for (const card of document.querySelectorAll('[data-agent]')) {
    const field = (name) => card.querySelector('[data-field="' + name + '"]');
    const number = (name) => {
      const v = field(name).dataset.value;
      return v === undefined ? null : Number(v);
    };
    out[card.dataset.agent] = {
      breaching: card.dataset.breaching === 'true',
      badge: field('badge').textContent,
      compliance: number('compliance'),
      compliance_text: field('compliance').textContent,
      users_within_sla: number('users-within-sla'),
      active_users: number('active-users'),
      active_users_text: field('active-users').textContent,
      lag_p50: number('lag-p50'),
      lag_p99: number('lag-p99'),
      samples: number('samples'),
      sla_seconds: number('sla'),
      lag_points: Number(field('lag-chart').dataset.points),
      compliance_points: Number(field('compliance-chart').dataset.points),
      canvases: card.querySelectorAll('canvas').length,
      worst: [...field('worst').querySelectorAll('tr[data-user]')].map(
        (tr) => [tr.dataset.user, Number(tr.dataset.value)]),
    };
  }
  return {
    state: document.body.dataset.state,
    generated_at: document.body.dataset.generatedAt,
    agents: out,
  };
})()
"""


def charts_drawn(min_points: int) -> str:
    """JS: the page is ready and every agent's two charts have `min_points` history points."""
    return f"""
(() => {{
  if (document.body.dataset.state !== 'ready') return false;
  const cards = document.querySelectorAll('[data-agent]');
  if (cards.length === 0) return false;
  for (const card of cards) {{
    if (card.querySelectorAll('canvas').length < 2) return false;
    for (const chart of card.querySelectorAll('.chart'))
      if (Number(chart.dataset.points) < {min_points}) return false;
  }}
  return true;
}})()
"""


# Everything wider than the viewport or reaching past its right edge, and the page's own width.
OVERFLOW_JS = """
(() => {
  const width = window.innerWidth;
  const wide = [];
  for (const el of document.querySelectorAll('body *')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    if (r.width > width || r.right > width + 0.5 || r.left < -0.5) {
      const name = el.tagName.toLowerCase() + (el.className ? '.' + el.className : '')
        + (el.dataset.field ? '[' + el.dataset.field + ']' : '');
      wide.push(name + ' ' + Math.round(r.left) + '..' + Math.round(r.right));
    }
  }
  return {
    innerWidth: width,
    scrollWidth: document.documentElement.scrollWidth,
    wide: wide.slice(0, 20),
  };
})()
"""

# Where each lag chart drew its newest points, as a share of the plot's height from its
# bottom (0 = on the floor, 1 = at the top), and its y scale.
LAG_HEIGHTS_JS = """
(() => {
  const out = {};
  for (const card of document.querySelectorAll('[data-agent]')) {
    const chart = card.querySelector('[data-field="lag-chart"]').dataset;
    out[card.dataset.agent] = {
      scale: chart.yScale ?? null,
      p50: chart.p50Height === undefined ? null : Number(chart.p50Height),
      p99: chart.p99Height === undefined ? null : Number(chart.p99Height),
      sla: chart.slaHeight === undefined ? null : Number(chart.slaHeight),
    };
  }
  return out;
})()
"""
# The lowest a real lag may be drawn: a tenth of the plot above the floor is a line a person
# tells apart from zero.
MIN_LAG_HEIGHT = 0.1


def assert_fits(fit: dict[str, Any], width: int) -> None:
    """Nothing on the page (`OVERFLOW_JS`'s answer) overflows a viewport `width` px wide."""
    assert fit["innerWidth"] == width, fit
    assert fit["scrollWidth"] <= fit["innerWidth"] and fit["wide"] == [], fit


def assert_lag_readable(heights: dict[str, Any], lagged: set[str]) -> None:
    """Each lag chart (`LAG_HEIGHTS_JS`'s answer) shows its lag off the floor and its SLA
    line on the chart, above the lag."""
    for agent_id in lagged:
        drawn = heights[agent_id]
        assert drawn["scale"] == "log", (agent_id, drawn)
        assert drawn["p50"] is not None and drawn["p99"] is not None, (agent_id, drawn)
        assert drawn["sla"] is not None and drawn["sla"] <= 1.0, (agent_id, drawn)
        assert MIN_LAG_HEIGHT <= drawn["p50"] <= drawn["p99"] < drawn["sla"], (agent_id, drawn)


def refreshes_now(browser: HeadlessChromium) -> int:
    return int(browser.evaluate("document.body.dataset.refreshes"))


def _field(agent_id: str, field: str) -> str:
    selector = json.dumps(f'[data-agent="{agent_id}"] [data-field="{field}"]')
    return f"document.querySelector({selector})"


def badge_is(agent_id: str, text: str) -> str:
    """JS: the agent's badge reads `text`."""
    return f"{_field(agent_id, 'badge')}?.textContent === {json.dumps(text)}"


def value_is(agent_id: str, field: str, value: float) -> str:
    """JS: the agent's `field` holds the API's raw `value`."""
    return f"Number({_field(agent_id, field)}?.dataset.value) === {json.dumps(value)}"


@pytest.fixture
def api(services: Any, topic_prefix: str, key_prefix: str) -> Iterator[tuple[ApiServer, Any]]:
    settings = Settings(
        kafka_bootstrap=services.kafka_bootstrap,
        store_url=services.redis_url,
        topic_prefix=topic_prefix,
        key_prefix=key_prefix,
        api_token=SecretStr(TOKEN),
        freshness_check_interval_s=CHECK_INTERVAL_S,
    )
    app = create_app(settings)
    with ApiServer(app) as server:
        # The stamper reads from "now" on: events sent before it has its partitions
        # would never count as ingested.
        assert app.state.stamper is not None, "the ingestion stamper is off"
        assert app.state.stamper.wait_assigned(60), app.state.stamper.status
        yield server, app


def test_dashboard_shows_real_freshness_and_a_breach_within_one_check_interval(
    services: Any, topic_prefix: str, key_prefix: str, api: tuple[ApiServer, Any], tmp_path: Path
) -> None:
    server, _app = api
    env = service_env(services, topic_prefix, key_prefix)
    http = httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {TOKEN}"},
        trust_env=False,
        timeout=10,
    )
    manifests = {m.id: m for m in registry.manifests()}
    users = FRESH_USERS + LATE_USERS
    now = datetime.now(UTC)
    producer = EventProducer(bootstrap=services.kafka_bootstrap, topic_prefix=topic_prefix)
    for user_id in users:
        for event in history(user_id, now):
            producer.publish(event)
    assert producer.flush(30).published == 21 * len(users)
    run_flow(env)

    # The HTML is public and carries no secret; its data needs the token.
    page = httpx.get(server.url + "/freshness", trust_env=False)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert TOKEN not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for asset in ("freshness.js", "uPlot.iife.min.js", "uPlot.min.css"):
        assert httpx.get(f"{server.url}/static/dashboard/{asset}", trust_env=False).is_success
    assert httpx.get(f"{server.url}/static/dashboard/app.py", trust_env=False).status_code == 404
    assert httpx.get(server.url + "/v1/freshness", trust_env=False).status_code == 401

    with HeadlessChromium() as browser:
        assert browser.open(f"{server.url}/freshness#token={TOKEN}") == 200
        # Three checks at least, so each chart draws a line, not a dot.
        browser.wait(charts_drawn(3), timeout_s=30)
        # The fragment is gone from the address bar once the token is kept.
        assert "token" not in browser.evaluate("location.href")

        # 1. Everyone written by the flow: the page agrees with the API and with the test.
        shown = browser.evaluate(READ_AGENTS_JS)
        report = http.get("/v1/freshness").json()
        assert shown["state"] == "ready"
        assert set(shown["agents"]) == set(report["agents"]) == set(manifests)
        for agent_id, agent in report["agents"].items():
            on_page = shown["agents"][agent_id]
            assert on_page["active_users"] == agent["active_users"] == len(users), agent_id
            assert on_page["active_users_text"] == str(len(users))
            assert on_page["users_within_sla"] == agent["users_within_sla"] == len(users)
            assert on_page["compliance"] == agent["compliance"] == 1.0
            assert on_page["compliance_text"] == "100 %"
            assert on_page["badge"] == "OK" and not on_page["breaching"]
            assert on_page["sla_seconds"] == manifests[agent_id].freshness_sla_seconds
            assert on_page["lag_points"] >= 3 and on_page["compliance_points"] >= 3
            assert on_page["canvases"] >= 2
            assert on_page["worst"] == []
        # Lag comes from the flow's writes: every agent the flow computed has samples.
        lagged = {a for a, agent in report["agents"].items() if agent["lag_ms"]["samples"] > 0}
        assert lagged >= {"momentum", "time-of-day"}, report["agents"]
        for agent_id in lagged:
            lag = report["agents"][agent_id]["lag_ms"]
            on_page = shown["agents"][agent_id]
            assert (on_page["lag_p50"], on_page["lag_p99"], on_page["samples"]) == (
                lag["p50"],
                lag["p99"],
                lag["samples"],
            )
            assert 0 <= lag["p50"] <= lag["p99"] < 60_000
        # The same page on a desktop and on a phone: screenshots first, then the checks.
        browser.screenshot(tmp_path / "ok.png")
        desktop = browser.evaluate(OVERFLOW_JS), browser.evaluate(LAG_HEIGHTS_JS)
        browser.viewport(*PHONE)
        browser.wait(f"window.innerWidth === {PHONE[0]}")
        browser.wait(f"Number(document.body.dataset.refreshes) > {refreshes_now(browser)}")
        browser.screenshot(tmp_path / "ok-390.png")
        phone = browser.evaluate(OVERFLOW_JS), browser.evaluate(LAG_HEIGHTS_JS)
        browser.viewport(*DESKTOP)
        browser.wait(f"window.innerWidth === {DESKTOP[0]}")
        for width, (fit, heights) in ((DESKTOP[0], desktop), (PHONE[0], phone)):
            assert_fits(fit, width)
            assert_lag_readable(heights, lagged)

        # 2. The late users' newest events are ingested (stamped) but never computed.
        shortest_sla_s = min(m.freshness_sla_seconds for m in manifests.values())
        strictest = sorted(
            a for a, m in manifests.items() if m.freshness_sla_seconds == shortest_sla_s
        )
        lenient = sorted(
            a for a, m in manifests.items() if m.freshness_sla_seconds > shortest_sla_s
        )
        sent_from = time.time()
        for user_id in LATE_USERS:
            producer.publish(task_done(f"{user_id}-late", user_id, datetime.now(UTC)))
        assert producer.flush(30).published == len(LATE_USERS)
        sent_by = time.time()
        # The breach begins when the oldest of them has waited the SLA: no sooner than
        # `sent_from + sla`, no later than `sent_by + sla`.
        breach_from, breach_by = sent_from + shortest_sla_s, sent_by + shortest_sla_s

        refreshes = int(browser.evaluate("document.body.dataset.refreshes"))
        browser.wait(f"Number(document.body.dataset.refreshes) > {refreshes}")
        early = browser.evaluate(READ_AGENTS_JS)
        still_before_breach = time.time() < breach_from
        if still_before_breach:  # on a slow machine the breach may already have begun
            assert all(a["badge"] == "OK" for a in early["agents"].values()), early

        deadline = breach_by + CHECK_INTERVAL_S + RENDER_SLACK_S
        browser.wait(
            " && ".join(badge_is(a, "BREACH") for a in strictest),
            timeout_s=max(deadline - time.time(), 1.0),
        )
        shown_at = time.time()
        print(f"BREACH shown {shown_at - breach_by:+.2f}s after the breach began at the latest")
        assert shown_at <= deadline, (
            f"BREACH showed {shown_at - breach_by:.2f}s after the breach began "
            f"(check interval {CHECK_INTERVAL_S}s)"
        )
        assert shown_at >= breach_from, "BREACH showed before any user exceeded the SLA"

        expected = (len(users) - len(LATE_USERS)) / len(users)
        browser.wait(" && ".join(value_is(a, "compliance", expected) for a in strictest))
        shown = browser.evaluate(READ_AGENTS_JS)
        report = http.get("/v1/freshness").json()
        assert report["pending_users"] == len(LATE_USERS)
        for agent_id in strictest:
            agent, on_page = report["agents"][agent_id], shown["agents"][agent_id]
            assert on_page["compliance"] == agent["compliance"] == expected
            assert on_page["compliance_text"] == f"{100 * expected:.2f} %"
            assert on_page["users_within_sla"] == agent["users_within_sla"] == len(FRESH_USERS)
            assert on_page["active_users"] == agent["active_users"] == len(users)
            assert on_page["breaching"] and on_page["badge"] == "BREACH"
            worst = dict(on_page["worst"])
            assert set(worst) == set(LATE_USERS) == {w["user_id"] for w in agent["worst"]}
            assert all(ms >= shortest_sla_s * 1000 for ms in worst.values()), worst
        # The others' SLA is longer: still within it (the test is well under a minute in).
        if time.time() < sent_from + min(manifests[a].freshness_sla_seconds for a in lenient):
            for agent_id in lenient:
                assert shown["agents"][agent_id]["badge"] == "OK", agent_id
        # Two more refreshes, so the history (one point per check) shows the drop too.
        refreshes = int(browser.evaluate("document.body.dataset.refreshes"))
        browser.wait(f"Number(document.body.dataset.refreshes) >= {refreshes + 2}")
        browser.screenshot(tmp_path / "breach.png")
        assert browser.problems() == []
    producer.close()
    http.close()
