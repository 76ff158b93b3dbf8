// Weir console: polls the JSON API, renders tables, draws the rate chart.
// No framework: DOM built with textContent only (names come from clients).
"use strict";

const POLL_MS = 2000;
const CHART_POINTS = 60;
const SERIES = [
  { key: "kafka_in", label: "Kafka in/s", color: "#1f6feb" },
  { key: "kafka_out", label: "Kafka out/s", color: "#7ea7f5" },
  { key: "amqp_in", label: "AMQP in/s", color: "#e8590c" },
  { key: "amqp_out", label: "AMQP out/s", color: "#f4a261" },
];
const history = Object.fromEntries(SERIES.map((s) => [s.key, []]));
let previous = null;

function $(id) { return document.getElementById(id); }

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() { $("error").hidden = true; }

// Calls the API; rejects with the server's {"error"} message.
async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch (_) { data = text; }
  }
  if (!response.ok) {
    const message = data && data.error ? data.error : `${response.status} ${response.statusText}`;
    throw new Error(`${method} ${path}: ${message}`);
  }
  return data;
}

// Runs an action; errors go to the banner instead of breaking the page.
async function attempt(action) {
  try {
    await action();
    clearError();
    await refresh();
  } catch (error) {
    showError(error.message);
  }
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function button(label, onClick, className) {
  const node = el("button", label, className);
  node.type = "button";
  node.addEventListener("click", onClick);
  return node;
}

function row(cells, attributes) {
  const tr = document.createElement("tr");
  for (const [key, value] of Object.entries(attributes || {})) tr.dataset[key] = value;
  for (const cell of cells) {
    if (cell instanceof Node) {
      const td = el("td");
      td.appendChild(cell);
      tr.appendChild(td);
    } else if (typeof cell === "number") {
      tr.appendChild(el("td", cell, "num"));
    } else {
      tr.appendChild(el("td", cell === null || cell === undefined ? "—" : cell));
    }
  }
  return tr;
}

function fill(id, rows) {
  const body = $(id);
  body.replaceChildren(...rows);
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function rate(value) { return value === null || value === undefined ? "—" : value.toFixed(1); }

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function vhostPath(vhost, name) { return `${encodeURIComponent(vhost)}/${encodeURIComponent(name)}`; }

function renderOverview(o) {
  const facts = [
    ["Version", o.version], ["Uptime", duration(o.uptime_s)],
    ["Kafka connections", o.connections.kafka], ["AMQP connections", o.connections.amqp],
    ["Topics", o.topics], ["Queues", o.queues], ["Groups", o.groups],
    ["Disk free", bytes(o.disk_free_bytes)], ["Memory", `${bytes(o.memory_rss_bytes)} / ${bytes(o.memory_high_watermark_bytes)}`],
  ];
  $("facts").replaceChildren(...facts.map(([k, v]) => {
    const div = el("div");
    div.append(el("dt", k), el("dd", v));
    return div;
  }));
  const now = performance.now();
  const totals = {
    kafka_in: o.messages_in_total.kafka, kafka_out: o.messages_out_total.kafka,
    amqp_in: o.messages_in_total.amqp, amqp_out: o.messages_out_total.amqp,
  };
  if (previous) {
    const seconds = Math.max((now - previous.at) / 1000, 0.001);
    for (const s of SERIES) {
      const values = history[s.key];
      values.push(Math.max(0, (totals[s.key] - previous.totals[s.key]) / seconds));
      if (values.length > CHART_POINTS) values.shift();
    }
  }
  previous = { at: now, totals };
  drawChart();
}

// A line chart of the last CHART_POINTS samples of each series.
function drawChart() {
  const canvas = $("chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const pad = { left: 48, right: 8, top: 8, bottom: 18 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  let max = 1;
  for (const s of SERIES) for (const v of history[s.key]) max = Math.max(max, v);
  max = niceCeiling(max);
  g.strokeStyle = "#e4e7ec";
  g.fillStyle = "#667085";
  g.font = "11px system-ui, sans-serif";
  g.lineWidth = 1;
  for (let i = 0; i <= 4; i += 1) {
    const y = pad.top + plotH - (plotH * i) / 4;
    g.beginPath();
    g.moveTo(pad.left, y);
    g.lineTo(width - pad.right, y);
    g.stroke();
    g.fillText(formatAxis((max * i) / 4), 4, y + 4);
  }
  g.fillText(`last ${CHART_POINTS * POLL_MS / 1000} s`, pad.left, height - 4);
  g.lineWidth = 2;
  for (const s of SERIES) {
    const values = history[s.key];
    if (values.length < 2) continue;
    g.strokeStyle = s.color;
    g.beginPath();
    values.forEach((v, i) => {
      const x = pad.left + (plotW * (CHART_POINTS - values.length + i)) / (CHART_POINTS - 1);
      const y = pad.top + plotH - (plotH * v) / max;
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  }
}

function niceCeiling(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

function formatAxis(value) {
  if (value >= 1e6) return `${(value / 1e6).toFixed(1)}M`;
  if (value >= 1e3) return `${(value / 1e3).toFixed(1)}k`;
  return value.toFixed(value < 1 ? 2 : value < 10 ? 1 : 0);
}

function renderLegend() {
  $("legend").replaceChildren(...SERIES.map((s) => {
    const span = el("span");
    const swatch = el("i");
    swatch.style.background = s.color;
    span.append(swatch, s.label);
    return span;
  }));
}

function renderTopics(topics) {
  fill("topics-body", topics.map((t) => row([
    button(t.name, () => attempt(() => showTopic(t.name))),
    t.partitions, t.messages, bytes(t.size_bytes),
    button("Delete", () => {
      if (confirm(`Delete topic ${t.name} and its data?`)) {
        attempt(() => api("DELETE", `/api/topics/${encodeURIComponent(t.name)}`));
      }
    }, "danger"),
  ], { topic: t.name })));
}

async function showTopic(name) {
  const t = await api("GET", `/api/topics/${encodeURIComponent(name)}`);
  const table = el("table");
  table.appendChild(row(["Partition", "Log start", "High watermark", "Log end", "Size"].map((h) => el("strong", h))));
  for (const p of t.partitions) {
    table.appendChild(row([p.partition, p.log_start_offset, p.high_watermark, p.log_end_offset, bytes(p.size_bytes)]));
  }
  $("topic-detail").replaceChildren(el("h3", `Topic ${t.name}`), table);
}

async function renderGroups(groups) {
  const rows = [];
  for (const g of groups) {
    let detail = null;
    try {
      detail = await api("GET", `/api/groups/${encodeURIComponent(g.group)}`);
    } catch (_) {
      detail = null; // deleted meanwhile
    }
    const offsets = detail && detail.offsets.length ? detail.offsets : [null];
    for (const o of offsets) {
      rows.push(row([
        g.group, g.state, g.members,
        o ? o.topic : null, o ? o.partition : null, o ? o.committed : null,
        o ? o.log_end : null, o ? o.lag : null, o ? rate(o.rate_per_s) : null,
        o ? duration(o.drain_s) : null,
      ], { group: g.group }));
    }
  }
  fill("groups-body", rows);
}

function renderQueues(queues) {
  fill("queues-body", queues.map((q) => {
    const path = vhostPath(q.vhost, q.name);
    const actions = el("span");
    actions.append(
      button("Get", () => attempt(async () => {
        const messages = await api("POST", `/api/queues/${path}/get`, { count: 10, ack: false });
        $("messages").replaceChildren(el("h3", `Messages in ${q.name} (requeued)`), el("pre", JSON.stringify(messages, null, 2)));
      })),
      button("Purge", () => {
        if (confirm(`Purge queue ${q.name}?`)) attempt(() => api("DELETE", `/api/queues/${path}/contents`));
      }, "purge"),
      button("Delete", () => {
        if (confirm(`Delete queue ${q.name}?`)) attempt(() => api("DELETE", `/api/queues/${path}`));
      }, "danger"),
    );
    const ready = el("td", q.ready, "num ready");
    const tr = row([q.vhost, q.name, q.type], { queue: q.name });
    tr.append(ready);
    for (const cell of [q.unacked, q.consumers]) tr.appendChild(el("td", cell, "num"));
    for (const cell of [rate(q.publish_rate_per_s), rate(q.deliver_rate_per_s), q.dead_letter_exchange || "—"]) {
      tr.appendChild(el("td", cell));
    }
    const td = el("td");
    td.appendChild(actions);
    tr.appendChild(td);
    return tr;
  }));
}

function renderExchanges(exchanges, bindings) {
  fill("exchanges-body", exchanges.map((x) => row([
    x.vhost, x.name || "(default)", x.type, String(x.durable), String(x.auto_delete), String(x.internal),
  ])));
  fill("bindings-body", bindings.map((b) => row([
    b.vhost, b.source || "(default)", b.destination, b.destination_type, b.routing_key,
  ])));
}

function renderConnections(connections) {
  fill("connections-body", connections.map((c) => row([
    c.id, c.protocol, c.peer, c.user, c.client, c.channels,
    new Date(c.connected_at_ms).toLocaleTimeString(),
    button("Close", () => {
      if (confirm(`Close connection ${c.id} (${c.peer})?`)) {
        attempt(() => api("DELETE", `/api/connections/${c.id}`));
      }
    }, "danger"),
  ], { connection: String(c.id) })));
}

let refreshing = false;
async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    const [overview, topics, groups, queues, exchanges, bindings, connections] = await Promise.all([
      api("GET", "/api/overview"), api("GET", "/api/topics"), api("GET", "/api/groups"),
      api("GET", "/api/queues"), api("GET", "/api/exchanges"), api("GET", "/api/bindings"),
      api("GET", "/api/connections"),
    ]);
    renderOverview(overview);
    renderTopics(topics);
    renderQueues(queues);
    renderExchanges(exchanges, bindings);
    renderConnections(connections);
    await renderGroups(groups);
    $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    $("status").textContent = "not reachable";
    showError(error.message);
  } finally {
    refreshing = false;
  }
}

function onSubmit(id, handler) {
  $(id).addEventListener("submit", (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    attempt(() => handler(form));
  });
}

function wireForms() {
  onSubmit("create-topic", (f) => api("POST", "/api/topics", {
    name: f.get("name"), partitions: Number(f.get("partitions")) || 1,
  }));
  onSubmit("produce", (f) => {
    const record = { value: f.get("value") };
    if (f.get("key")) record.key = f.get("key");
    return api("POST", `/api/topics/${encodeURIComponent(f.get("topic"))}/records`, { records: [record] });
  });
  onSubmit("peek", async (f) => {
    const query = new URLSearchParams({ partition: f.get("partition"), from: f.get("from"), limit: f.get("limit") });
    const records = await api("GET", `/api/topics/${encodeURIComponent(f.get("topic"))}/records?${query}`);
    $("records").replaceChildren(el("pre", JSON.stringify(records, null, 2)));
  });
  onSubmit("create-queue", (f) => api("PUT", `/api/queues/${vhostPath("/", f.get("name"))}`, {
    durable: f.get("durable") === "on", arguments: { "x-queue-type": f.get("type") },
  }));
  onSubmit("publish", async (f) => {
    const exchange = f.get("exchange") || "amq.default";
    const result = await api("POST", `/api/exchanges/${vhostPath("/", exchange)}/publish`, {
      routing_key: f.get("routing_key"), payload: f.get("payload"), properties: { delivery_mode: 2 },
    });
    if (!result.routed) throw new Error("published, but no queue was bound to receive it");
  });
}

window.addEventListener("error", (event) => showError(`console error: ${event.message}`));
window.addEventListener("unhandledrejection", (event) => showError(`console error: ${event.reason}`));
document.addEventListener("DOMContentLoaded", () => {
  renderLegend();
  wireForms();
  refresh();
  setInterval(refresh, POLL_MS);
});
