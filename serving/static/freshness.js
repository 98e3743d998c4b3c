// The freshness dashboard: polls GET /v1/freshness and draws one card per agent.
//
// The token never comes from the server: it is read once from a `#token=` URL
// fragment (which browsers do not send) or typed into the form, kept in this
// tab's sessionStorage, and the fragment is removed from the address bar.
// Every number is written as text for people and as `data-value` (the raw
// number from the API) for tests, under stable selectors:
//   body[data-state]                       loading | ready | auth | error
//   body[data-generated-at]                the `generated_at` last rendered
//   [data-agent="<id>"][data-breaching]    true | false
//   [data-agent="<id>"] [data-field="compliance" | "users-within-sla" | ...]
//   [data-agent="<id>"] [data-field="worst"] tr[data-user]
//   [data-field="lag-chart"][data-y-scale]  log; and where the newest p50, p99 and SLA
//       points are drawn, as a share of the plot's height from its bottom:
//       [data-p50-height] [data-p99-height] [data-sla-height]
// The lag chart has a log scale: lags of milliseconds and SLAs of minutes on one chart,
// each readable (on a linear scale the lag would sit flat on zero under the SLA line).
// Nothing here writes HTML from data: text goes through textContent only.
(function () {
  "use strict";

  const TOKEN_KEY = "oo.freshness.token";
  const DATA_URL = "/v1/freshness";
  const MIN_INTERVAL_S = 1;
  const FIRST_INTERVAL_S = 5; // until the API says its check interval
  const CHART_HEIGHT = 170;
  const MIN_CHART_WIDTH = 120;
  const LAG_FLOOR_MS = 1; // a log scale has no zero: a lag under 1 ms is drawn at 1 ms
  const COLORS = { p50: "#5ab0ff", p99: "#ffb347", limit: "#ff4d4f", ok: "#3ddc84", axis: "#8a8a8a", grid: "#1c1c1c" };

  const body = document.body;
  const agentsEl = document.getElementById("agents");
  const statusEl = document.getElementById("status");
  const form = document.getElementById("token-form");
  const tokenInput = document.getElementById("token-input");
  const template = document.getElementById("agent-template");

  const cards = new Map(); // agent id -> {root, lagChart, complianceChart, observers}
  let timer = null;
  let intervalS = FIRST_INTERVAL_S;
  let refreshes = 0;

  // -- the token --

  function takeTokenFromFragment() {
    const params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    const token = params.get("token");
    if (token) {
      sessionStorage.setItem(TOKEN_KEY, token);
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function askForToken(message) {
    body.dataset.state = "auth";
    statusEl.textContent = message;
    form.hidden = false;
    tokenInput.focus();
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const value = tokenInput.value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    tokenInput.value = "";
    form.hidden = true;
    refresh();
  });

  // -- formatting --

  function fmtDuration(ms) {
    if (ms === null || ms === undefined || !isFinite(ms)) return "–";
    const abs = Math.abs(ms);
    if (abs < 1000) return Math.round(ms) + " ms";
    const s = ms / 1000;
    if (abs < 60000) return (s < 10 ? s.toFixed(2) : s.toFixed(1)) + " s";
    if (abs < 3600000) return Math.floor(s / 60) + "m " + String(Math.floor(s % 60)).padStart(2, "0") + "s";
    if (abs < 86400000) return Math.floor(s / 3600) + "h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  }

  function fmtPercent(fraction) {
    if (fraction === null || fraction === undefined || !isFinite(fraction)) return "–";
    const pct = fraction * 100;
    return (pct === 100 || pct === 0 ? pct.toFixed(0) : pct.toFixed(2)) + " %";
  }

  function fmtCount(n) {
    return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
  }

  // A tick of the lag chart's log axis: short, no trailing zeros ("20 ms", "5 s", "2 min").
  function fmtTick(ms) {
    if (ms === null || ms === undefined || !isFinite(ms)) return "";
    if (ms < 1000) return +ms.toPrecision(2) + " ms";
    if (ms < 60000) return +(ms / 1000).toPrecision(2) + " s";
    if (ms < 3600000) return +(ms / 60000).toPrecision(2) + " min";
    return +(ms / 3600000).toPrecision(2) + " h";
  }

  // Local wall-clock time of an epoch-seconds axis tick (the viewer's zone, derived).
  function fmtClock(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }

  // Epoch seconds for uPlot from what the API sends: ISO-8601, epoch ms or epoch s.
  function epochSeconds(t) {
    if (typeof t === "number") return t > 1e11 ? t / 1000 : t;
    const parsed = Date.parse(t);
    return isNaN(parsed) ? null : parsed / 1000;
  }

  function setField(root, field, text, value) {
    const el = root.querySelector('[data-field="' + field + '"]');
    el.textContent = text;
    if (value === null || value === undefined) delete el.dataset.value;
    else el.dataset.value = String(value);
  }

  // -- charts --

  function axes(formatY, ySplits) {
    const common = { stroke: COLORS.axis, grid: { stroke: COLORS.grid, width: 1 }, ticks: { stroke: COLORS.grid, width: 1 }, font: "11px system-ui, sans-serif" };
    const y = Object.assign({}, common, { size: 60, values: (u, values) => values.map(formatY) });
    if (ySplits) Object.assign(y, { splits: ySplits, filter: (u, splits) => splits });
    return [Object.assign({}, common, { space: 70, values: (u, values) => values.map(fmtClock) }), y];
  }

  // The lag axis's ticks: the SLA itself and round durations (1 ms ... 1 h) on the chart,
  // leaving out those drawn closer than TICK_GAP_PX to the SLA or to each other, so the
  // labels never overlap.
  const ROUND_MS = [1, 10, 100, 1000, 10000, 60000, 600000, 3600000];
  const TICK_GAP_PX = 16;
  function lagSplits(u, axisIdx, min, max) {
    const sla = newestValue(u.data[3] || []);
    const ticks = sla === null ? [] : [sla];
    const at = (ms) => u.valToPos(ms, "y");
    for (const ms of ROUND_MS) {
      if (ms < min || ms > max) continue;
      if (ticks.every((t) => Math.abs(at(t) - at(ms)) >= TICK_GAP_PX)) ticks.push(ms);
    }
    return ticks.sort((x, y) => x - y);
  }

  function chartWidth(el) {
    return Math.max(MIN_CHART_WIDTH, Math.floor(el.getBoundingClientRect().width));
  }

  // The chart follows its box (a rotated phone, a narrower window, one column or two);
  // the observer is disconnected when the card goes.
  function fitToBox(chart, el) {
    let width = chartWidth(el);
    const observer = new ResizeObserver(function () {
      const now = chartWidth(el);
      if (now === width) return;
      width = now;
      chart.setSize({ width: now, height: CHART_HEIGHT });
    });
    observer.observe(el);
    return observer;
  }

  // The lag axis: from half a decade or more below the lowest lag to twice the highest
  // value (the SLA, unless a lag is above it), so both the lag and the SLA line are on it.
  function lagRange(u, min, max) {
    const low = Math.max(min || LAG_FLOOR_MS, LAG_FLOOR_MS);
    const from = Math.pow(10, Math.floor(Math.log10(low) - 0.5));
    return [from, Math.max(max || 0, from * 10) * 2];
  }

  function newestValue(values) {
    for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null && values[i] !== undefined) return values[i];
    return null;
  }

  // For tests and people alike: where the newest p50, p99 and SLA points are drawn.
  function recordLagHeights(u, el) {
    const height = u.over.clientHeight;
    el.dataset.yScale = u.scales.y.distr === 3 ? "log" : "linear";
    [["p50Height", 1], ["p99Height", 2], ["slaHeight", 3]].forEach(function ([key, index]) {
      const value = newestValue(u.data[index] || []);
      if (value === null || !height) delete el.dataset[key];
      else el.dataset[key] = (1 - u.valToPos(value, "y") / height).toFixed(3);
    });
  }

  function makeLagChart(el) {
    return new uPlot({
      width: chartWidth(el),
      height: CHART_HEIGHT,
      scales: { x: { time: true }, y: { distr: 3, log: 10, range: lagRange } },
      axes: axes(fmtTick, lagSplits),
      legend: { show: true, live: false },
      cursor: { drag: { x: false, y: false } },
      hooks: { draw: [(u) => recordLagHeights(u, el)] },
      series: [
        {},
        { label: "p50", stroke: COLORS.p50, width: 1.5, value: (u, v) => fmtDuration(v) },
        { label: "p99", stroke: COLORS.p99, width: 1.5, value: (u, v) => fmtDuration(v) },
        { label: "SLA", stroke: COLORS.limit, width: 1, dash: [4, 4], points: { show: false }, value: (u, v) => fmtDuration(v) },
      ],
    }, [[], [], [], []], el);
  }

  function makeComplianceChart(el) {
    return new uPlot({
      width: chartWidth(el),
      height: CHART_HEIGHT,
      scales: { x: { time: true }, y: { range: (u, min, max) => [Math.min(min, 90), 100] } },
      axes: axes((v) => (v === null ? "" : v.toFixed(v % 1 ? 1 : 0) + " %")),
      legend: { show: true, live: false },
      cursor: { drag: { x: false, y: false } },
      series: [
        {},
        { label: "compliance", stroke: COLORS.ok, width: 1.5, value: (u, v) => (v === null ? "–" : v.toFixed(2) + " %") },
        { label: "objective", stroke: COLORS.limit, width: 1, dash: [4, 4], points: { show: false }, value: (u, v) => (v === null ? "–" : v.toFixed(2) + " %") },
      ],
    }, [[], [], []], el);
  }

  function lagPoint(ms) {
    return ms === null || ms === undefined || !isFinite(ms) ? null : Math.max(ms, LAG_FLOOR_MS);
  }

  function seriesFor(agentId, history, slaMs, objective) {
    const xs = [], p50 = [], p99 = [], sla = [], compliance = [], target = [];
    for (const point of history || []) {
      const at = point.agents && point.agents[agentId];
      const x = epochSeconds(point.t);
      if (!at || x === null) continue;
      xs.push(x);
      p50.push(lagPoint(at.lag_p50_ms));
      p99.push(lagPoint(at.lag_p99_ms));
      sla.push(slaMs);
      compliance.push(at.compliance === null || at.compliance === undefined ? null : at.compliance * 100);
      target.push(objective * 100);
    }
    return { lag: [xs, p50, p99, sla], compliance: [xs, compliance, target] };
  }

  // -- cards --

  function cardFor(agentId) {
    let card = cards.get(agentId);
    if (card) return card;
    const root = template.content.firstElementChild.cloneNode(true);
    root.dataset.agent = agentId;
    root.querySelector('[data-field="agent-id"]').textContent = agentId;
    // Keep the cards in id order whatever order the API lists them in.
    const after = [...cards.keys()].sort().find((id) => id > agentId);
    agentsEl.insertBefore(root, after ? cards.get(after).root : null);
    const lagEl = root.querySelector('[data-field="lag-chart"]');
    const complianceEl = root.querySelector('[data-field="compliance-chart"]');
    card = { root, lagChart: makeLagChart(lagEl), complianceChart: makeComplianceChart(complianceEl) };
    card.observers = [fitToBox(card.lagChart, lagEl), fitToBox(card.complianceChart, complianceEl)];
    cards.set(agentId, card);
    return card;
  }

  function renderWorst(tbody, worst, slaMs) {
    const rows = [];
    for (const entry of worst || []) {
      const tr = document.createElement("tr");
      tr.dataset.user = entry.user_id;
      tr.dataset.value = String(entry.staleness_ms);
      const within = entry.within_sla === undefined ? entry.staleness_ms < slaMs : entry.within_sla;
      if (!within) tr.className = "over";
      const user = document.createElement("td");
      user.textContent = entry.user_id;
      const staleness = document.createElement("td");
      staleness.textContent = fmtDuration(entry.staleness_ms);
      tr.append(user, staleness);
      rows.push(tr);
    }
    if (!rows.length) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = document.createElement("td");
      td.colSpan = 2;
      td.textContent = "none";
      tr.append(td);
      rows.push(tr);
    }
    tbody.replaceChildren(...rows);
  }

  function renderAgent(agentId, agent, report) {
    const card = cardFor(agentId);
    const root = card.root;
    const slaMs = agent.sla_seconds * 1000;
    const lag = agent.lag_ms || {};
    const breaching = isBreaching(agent, report);
    root.dataset.breaching = breaching ? "true" : "false";
    setField(root, "badge", breaching ? "BREACH" : "OK", null);
    setField(root, "sla", fmtDuration(slaMs), agent.sla_seconds);
    setField(root, "compliance", fmtPercent(agent.compliance), agent.compliance);
    setField(root, "objective", fmtPercent(report.objective), report.objective);
    setField(root, "users-within-sla", fmtCount(agent.users_within_sla), agent.users_within_sla);
    setField(root, "active-users", fmtCount(agent.active_users), agent.active_users);
    setField(root, "lag-p50", fmtDuration(lag.p50), lag.p50);
    setField(root, "lag-p99", fmtDuration(lag.p99), lag.p99);
    setField(root, "samples", fmtCount(lag.samples), lag.samples);
    renderWorst(root.querySelector('[data-field="worst"]'), agent.worst, slaMs);

    const series = seriesFor(agentId, report.history, slaMs, report.objective);
    card.lagChart.setData(series.lag);
    card.complianceChart.setData(series.compliance);
    root.querySelector('[data-field="lag-chart"]').dataset.points = String(series.lag[0].length);
    root.querySelector('[data-field="compliance-chart"]').dataset.points = String(series.compliance[0].length);
  }

  // `breaching` is the background check's verdict (up to one check interval old); the
  // numbers are computed for this response. Either one below the objective shows the
  // badge, so a breach is on the page at the first refresh that sees it and the badge
  // never says OK beside a compliance under the objective.
  function isBreaching(agent, report) {
    return Boolean(agent.breaching) || (agent.compliance !== null && agent.compliance < report.objective);
  }

  function render(report) {
    const ids = Object.keys(report.agents || {}).sort();
    for (const id of ids) renderAgent(id, report.agents[id], report);
    for (const [id, card] of cards) {
      if (ids.includes(id)) continue;
      for (const observer of card.observers) observer.disconnect();
      card.lagChart.destroy();
      card.complianceChart.destroy();
      card.root.remove();
      cards.delete(id);
    }
    document.getElementById("objective").textContent = fmtPercent(report.objective);
    document.getElementById("window").textContent = fmtDuration(report.window_s * 1000);
    document.getElementById("check-interval").textContent = fmtDuration(report.check_interval_s * 1000);
    document.getElementById("pending-users").textContent = fmtCount(report.pending_users);
    document.getElementById("generated-at").textContent = new Date(epochSeconds(report.generated_at) * 1000).toLocaleString();
    refreshes += 1;
    body.dataset.generatedAt = String(report.generated_at);
    body.dataset.refreshes = String(refreshes);
    body.dataset.state = "ready";
    const breaching = ids.filter((id) => isBreaching(report.agents[id], report));
    statusEl.textContent = (breaching.length ? "BREACH: " + breaching.join(", ") + " · " : "") +
      "updated " + new Date().toLocaleTimeString() + " · every " + fmtDuration(intervalS * 1000);
  }

  // -- the loop --

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, intervalS * 1000);
  }

  async function refresh() {
    const current = token();
    if (!current) {
      askForToken("an API token is needed to read /v1/freshness");
      return;
    }
    let response;
    try {
      response = await fetch(DATA_URL, { headers: { Authorization: "Bearer " + current }, cache: "no-store" });
    } catch (error) {
      body.dataset.state = "error";
      statusEl.textContent = "the API does not answer (" + error.message + "); retrying";
      schedule();
      return;
    }
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      askForToken("the API refused the token; enter it again");
      return;
    }
    if (!response.ok) {
      body.dataset.state = "error";
      statusEl.textContent = "GET " + DATA_URL + " answered " + response.status + "; retrying";
      schedule();
      return;
    }
    try {
      const report = await response.json();
      intervalS = Math.max(MIN_INTERVAL_S, Number(report.check_interval_s) || FIRST_INTERVAL_S);
      form.hidden = true;
      render(report);
    } catch (error) {
      body.dataset.state = "error";
      statusEl.textContent = "could not show the report (" + error.message + "); retrying";
    }
    schedule();
  }

  takeTokenFromFragment();
  refresh();
})();
