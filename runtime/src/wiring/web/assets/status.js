// The status page: polls /status every second (rates are the change between two polls) and
// redraws /topology.svg every few seconds. It holds no data of its own; when the worker asks
// for a bearer token it prompts once and keeps it in sessionStorage for this tab.
"use strict";
(() => {
  const TOKEN_KEY = "rill-web-token";
  const POLL_MS = 1000;
  const TOPOLOGY_EVERY = 5;
  const $ = (id) => document.getElementById(id);
  let previous = null;
  let lastSvg = null;
  let tick = 0;
  let stopped = false;

  function notice(text) {
    const el = $("notice");
    el.hidden = !text;
    el.textContent = text || "";
  }

  // Requests run one after the other (see loop), so at most one prompt is ever open.
  async function get(path) {
    for (let attempt = 0; attempt < 3; attempt++) {
      const headers = {};
      const token = sessionStorage.getItem(TOKEN_KEY);
      if (token) headers.Authorization = "Bearer " + token;
      const res = await fetch(path, { headers, cache: "no-store" });
      if (res.status !== 401) {
        if (!res.ok && res.status !== 503) throw new Error(path + ": HTTP " + res.status);
        return res;
      }
      sessionStorage.removeItem(TOKEN_KEY);
      const given = window.prompt(
        (token ? "Wrong token. " : "") + "This worker requires its bearer token (RILL_WEB_TOKEN):");
      if (!given) {
        stopped = true;
        throw new Error("this worker requires a bearer token; reload the page to enter it");
      }
      sessionStorage.setItem(TOKEN_KEY, given.trim());
    }
    stopped = true;
    throw new Error("the token was refused; reload the page to try again");
  }

  async function loadTopology() {
    const svg = await (await get("/topology.svg")).text();
    if (svg !== lastSvg) {
      // The worker escapes every name in the drawing; it comes from the same origin.
      $("topology").innerHTML = svg;
      lastSvg = svg;
    }
  }

  function rate(now, before, field, seconds) {
    if (!before || seconds <= 0) return null;
    return Math.max(0, now[field] - before[field]) / seconds;
  }

  function fmtRate(r) {
    if (r === null) return "–";
    return r >= 100 ? r.toFixed(0) : r.toFixed(1);
  }

  function fmtLag(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 60) return seconds.toFixed(1) + " s";
    if (seconds < 3600) return (seconds / 60).toFixed(1) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
  }

  function renderStatus(s) {
    document.title = s.app + " · rill";
    $("app").textContent = s.app;
    $("url").textContent = s.url;
    const badge = $("readiness");
    badge.className = "badge " + (s.ready ? "ready" : "not-ready");
    badge.textContent = s.ready ? "ready" : "not ready: " + (s.reason || "unknown");

    const before = previous && new Map(previous.agents.map((a) => [a.name, a]));
    const seconds = previous ? (s.now_ms - previous.now_ms) / 1000 : 0;
    const body = document.createElement("tbody");
    const rates = new Map();
    for (const a of s.agents) {
      const old = before && before.get(a.name);
      const inRate = rate(a, old, "records_in", seconds);
      const outRate = rate(a, old, "records_out", seconds);
      rates.set(a.name, [inRate, outRate]);
      const row = document.createElement("tr");
      row.dataset.agent = a.name;
      cell(row, a.name, "agent-name");
      cell(row, fmtRate(inRate), "rate-in");
      cell(row, fmtRate(outRate), "rate-out");
      cell(row, String(a.records_in));
      cell(row, String(a.consumer_lag), a.consumer_lag > 0 ? "lag" : "");
      cell(row, fmtLag(a.event_time_lag_seconds));
      cell(row, String(a.dead_lettered), a.dead_lettered > 0 ? "bad" : "");
      cell(row, a.partitions.length ? a.partitions.join(", ") : "none");
      body.appendChild(row);
    }
    if (!s.agents.length) {
      const row = document.createElement("tr");
      cell(row, "no agents", "muted");
      body.appendChild(row);
    }
    $("agents").replaceChild(body, $("agents").tBodies[0]);

    for (const g of document.querySelectorAll("#topology g.agent")) {
      const label = g.querySelector("text.rate");
      const r = rates.get(g.dataset.agent);
      if (label && r && r[0] !== null) {
        label.textContent = fmtRate(r[0]) + "/s in · " + fmtRate(r[1]) + "/s out";
      }
    }
    $("updated").textContent = "updated " + new Date(s.now_ms).toLocaleTimeString();
    previous = s;
  }

  async function loop() {
    try {
      if (tick % TOPOLOGY_EVERY === 0) await loadTopology();
      renderStatus(await (await get("/status")).json());
      notice(null);
    } catch (e) {
      notice(stopped ? e.message : "cannot reach the worker: " + e.message);
    }
    tick++;
    if (!stopped) setTimeout(loop, POLL_MS);
  }

  loop();
})();
