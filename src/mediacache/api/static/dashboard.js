// mediacache dashboard: reads api/dashboard again on each api/events event (polling as the fallback,
// slowly while the stream is open, every 2 s without it), updates the figures, draws the throughput chart and
// retries failed assets. Text from the server goes through textContent only, never innerHTML:
// failure messages and URLs come from remote servers.
"use strict";

(function () {
  const body = document.body;
  const pollMs = Number(body.dataset.pollMs) || 2000;
  const streamPollMs = Number(body.dataset.streamPollMs) || 15000;
  let streaming = false;
  const TOKEN_KEY = "mediacache.apiToken";
  const SVG = "http://www.w3.org/2000/svg";

  function token() { return localStorage.getItem(TOKEN_KEY) || ""; }
  function authHeaders() { const t = token(); return t ? { Authorization: "Bearer " + t } : {}; }

  function humanBytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let size = n, i = 0;
    while (size >= 1024 && i < units.length - 1) { size /= 1024; i++; }
    return i === 0 ? size.toFixed(0) + " B" : size.toFixed(1) + " " + units[i];
  }

  function pick(data, path) {
    return path.split(".").reduce((obj, key) => (obj == null ? undefined : obj[key]), data);
  }

  function setLive(state, text) {
    const live = document.getElementById("live");
    live.className = "live " + state;
    document.getElementById("live-text").textContent = text;
  }

  function renderFigures(data) {
    for (const el of document.querySelectorAll("[data-field]")) {
      const field = el.dataset.field;
      const value = pick(data, field);
      if (field === "stored_bytes" || field === "bytes_not_stored") el.textContent = humanBytes(value);
      else el.textContent = value == null ? "–" : String(value);
    }
    document.getElementById("webhooks").hidden = !data.webhooks;
    const queueError = document.getElementById("queue-error");
    queueError.hidden = !data.queue_error;
    queueError.textContent = data.queue_error || "";
  }

  function renderFailures(data) {
    const kinds = document.getElementById("kinds");
    kinds.replaceChildren(...Object.entries(data.cache.failed_by_kind).sort().map(([kind, n]) => {
      const chip = document.createElement("span");
      chip.className = "kind";
      chip.textContent = kind + " " + n;
      return chip;
    }));
    const list = document.getElementById("failures");
    if (data.failures.length === 0) {
      const li = document.createElement("li");
      li.className = "none";
      li.textContent = "No failures.";
      list.replaceChildren(li);
      return;
    }
    list.replaceChildren(...data.failures.map((f) => {
      const li = document.createElement("li");
      const parts = [
        ["kind", f.error_kind || "unknown"], ["message", f.error || ""], ["url", f.original_url],
        ["meta", f.attempts + (f.attempts === 1 ? " attempt · " : " attempts · ") +
                 f.failed_at.replace("T", " ").slice(0, 19) + " UTC"],
      ];
      for (const [cls, text] of parts) {
        const span = document.createElement("span");
        span.className = cls;
        span.textContent = text;
        li.append(span);
      }
      return li;
    }));
  }

  function renderChart(data) {
    const svg = document.getElementById("chart");
    const points = data.throughput;
    const width = 600, height = 140, pad = 4;
    const peak = Math.max(1, ...points.map((p) => p[1]));
    const slot = width / Math.max(1, points.length);
    const nodes = [];
    for (const frac of [0.5, 1]) {
      const line = document.createElementNS(SVG, "line");
      const y = String(height - pad - frac * (height - 2 * pad));
      line.setAttribute("x1", "0"); line.setAttribute("x2", String(width));
      line.setAttribute("y1", y); line.setAttribute("y2", y);
      nodes.push(line);
    }
    points.forEach(([start, n], i) => {
      const h = (n / peak) * (height - 2 * pad);
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("x", String(i * slot + 1));
      rect.setAttribute("y", String(height - pad - h));
      rect.setAttribute("width", String(Math.max(1, slot - 2)));
      rect.setAttribute("height", String(h));
      const title = document.createElementNS(SVG, "title");
      title.textContent = new Date(start * 1000).toLocaleTimeString() + ": " + n;
      rect.append(title);
      nodes.push(rect);
    });
    svg.replaceChildren(...nodes);
    document.getElementById("chart-total").textContent = String(points.reduce((sum, p) => sum + p[1], 0));
    document.getElementById("chart-peak").textContent = String(Math.max(0, ...points.map((p) => p[1])));
  }

  function renderHosts(data) {
    const body = document.querySelector("#hosts tbody");
    body.replaceChildren(...(data.hosts || []).map((h) => {
      const row = document.createElement("tr");
      for (const value of [h.host, h.breaker, h.rate_per_s, h.permits_in_use, h.limits || "–"]) {
        const cell = document.createElement("td");
        cell.textContent = String(value);
        row.append(cell);
      }
      return row;
    }));
  }

  function render(data) {
    renderHosts(data);
    renderFigures(data);
    renderFailures(data);
    renderChart(data);
  }

  let timer = null;
  async function refresh() {
    clearTimeout(timer);
    try {
      const res = await fetch("api/dashboard", { headers: authHeaders(), cache: "no-store" });
      if (res.status === 401 || res.status === 403) {
        setLive("stale", "enter the API token");
      } else if (!res.ok) {
        setLive("stale", "server answered " + res.status);
      } else {
        render(await res.json());
        setLive("ok", (streaming ? "live (events) · " : "live · ") + new Date().toLocaleTimeString());
      }
    } catch (err) {
      setLive("stale", "server unreachable");
    }
    timer = setTimeout(refresh, streaming ? streamPollMs : pollMs);
  }

  // EventSource cannot send an Authorization header: with protected reads the page keeps polling.
  let pendingRefresh = null;
  function listen() {
    if (!window.EventSource || body.dataset.tokenRequired === "true") return;
    const source = new EventSource("api/events");
    source.addEventListener("open", () => { streaming = true; });
    source.addEventListener("error", () => { streaming = false; });  // EventSource reconnects by itself
    const onEvent = () => {
      // A burst of events (a batch finishing) costs one read, at most every 500 ms.
      if (pendingRefresh === null) pendingRefresh = setTimeout(() => { pendingRefresh = null; refresh(); }, 500);
    };
    source.addEventListener("asset.cached", onEvent);
    source.addEventListener("asset.failed", onEvent);
  }

  async function retry() {
    const button = document.getElementById("retry");
    const result = document.getElementById("retry-result");
    button.disabled = true;
    try {
      const res = await fetch("api/assets/retry-failed", { method: "POST", headers: authHeaders() });
      const answer = await res.json().catch(() => ({}));
      result.textContent = res.ok ? "Retried " + answer.retried + " failed assets."
                                  : "Retry refused: " + (answer.detail || res.status);
    } catch (err) {
      result.textContent = "Retry failed: server unreachable.";
    } finally {
      button.disabled = false;
    }
    refresh();
  }

  function init() {
    const initial = JSON.parse(document.getElementById("initial-data").textContent || "null");
    if (initial) renderChart(initial);
    document.getElementById("retry").addEventListener("click", retry);
    const form = document.getElementById("token-form");
    if (form) {
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        localStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
        refresh();
      });
    }
    listen();
    timer = setTimeout(refresh, initial ? pollMs : 0);
  }

  init();
})();
