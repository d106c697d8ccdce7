'use strict';
// The edgecomet dashboard: reads /dashboard/events (one event a second: {"uptime_ms", "stats"},
// "stats" being the /stats document), shows the figures, computes rates from successive totals
// and draws the last 10 minutes on canvases. Nothing is loaded from anywhere else.

const KEEP_MS = 10 * 60 * 1000; // ten minutes of points
const $ = (id) => document.getElementById(id);

// ---- formatting --------------------------------------------------------------------------------

function fmtNum(v) {
  if (v === null || v === undefined || !isFinite(v)) return '–';
  if (Math.abs(v) >= 100 || Number.isInteger(v)) return Math.round(v).toLocaleString('en-US');
  return v.toFixed(Math.abs(v) >= 10 ? 1 : 2);
}
function fmtBytes(v) {
  if (v === null || v === undefined || !isFinite(v)) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(v) >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return (i === 0 ? Math.round(v).toString() : v.toFixed(v >= 100 ? 0 : 1)) + ' ' + u[i];
}
function fmtShort(v) { // axis labels: three significant digits at most
  const a = Math.abs(v);
  const p = (x) => String(Number(x.toPrecision(3)));
  if (a >= 1e9) return p(v / 1e9) + 'G';
  if (a >= 1e6) return p(v / 1e6) + 'M';
  if (a >= 1e3) return p(v / 1e3) + 'k';
  return p(v);
}
function fmtBytesShort(v) {
  const u = ['', 'Ki', 'Mi', 'Gi', 'Ti'];
  let i = 0;
  while (Math.abs(v) >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return String(Number(v.toPrecision(3))) + u[i];
}
function fmtDuration(ms) {
  let s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400); s %= 86400;
  const h = Math.floor(s / 3600); s %= 3600;
  const m = Math.floor(s / 60); s %= 60;
  return (d ? d + 'd ' : '') + (d || h ? h + 'h ' : '') + (d || h || m ? m + 'm ' : '') + s + 's';
}

// Every figure is an element with data-k; its raw value goes to data-v (what the tests read).
const figures = new Map();
for (const el of document.querySelectorAll('[data-k]')) figures.set(el.dataset.k, el);
function show(key, v) {
  const el = figures.get(key);
  if (!el) return;
  el.dataset.v = v === null || v === undefined ? '' : String(v);
  el.textContent = el.dataset.unit === 'bytes' ? fmtBytes(v) : fmtNum(v);
}

// ---- the figures of one event ------------------------------------------------------------------

// The totals and gauges this page uses, from the process's own document or, under --processes,
// from the launcher's sums over every process.
function figuresOf(stats) {
  const p = stats.processes;
  const t = (p ? p.total : stats.total) || {};
  const hub = (p ? p.hub : stats.hub) || {};
  const g = (k) => t[k] || 0;
  const conns = {
    ws: g('conns_ws_sub'),
    sse: g('conns_sse'),
    stream: g('conns_stream'),
    poll: g('conns_poll'),
    bayeux: g('conns_bayeux_poll') + g('conns_bayeux_ws'),
    closing: g('conns_closing'),
    http: g('conns_http'),
    echo: g('conns_ws_echo'),
    dashboard: g('conns_dashboard'),
  };
  conns.total = Object.values(conns).reduce((a, b) => a + b, 0);
  return {
    conns,
    totals: {
      messages_in: g('messages_in'),
      messages_out: g('messages_out'),
      bytes_out: g('bytes_out'),
      slow_consumers: g('slow_consumers'),
      drops: g('drops'),
      accepted: g('accepted'),
    },
    mem: { rss: hub.memory_rss_bytes || 0, pss: hub.memory_pss_bytes || 0 },
  };
}

const RATES = [
  ['publishes', 'messages_in'],
  ['deliveries', 'messages_out'],
  ['bytes_out', 'bytes_out'],
  ['slow_consumers', 'slow_consumers'],
  ['drops', 'drops'],
];

// ---- charts ------------------------------------------------------------------------------------

class Chart {
  // series: [[name, color]]; fmt: axis label formatter.
  // bytes: the axis steps are nice numbers of KiB, MiB, GiB.
  constructor(id, series, fmt = fmtShort, bytes = false) {
    this.bytes = bytes;
    this.canvas = $('c-' + id);
    this.series = series.map(([name, color]) => ({ name, color, pts: [] }));
    this.fmt = fmt;
    $('l-' + id).innerHTML = '';
    for (const s of this.series) {
      const span = document.createElement('span');
      const i = document.createElement('i');
      i.style.background = s.color;
      span.append(i, s.name);
      $('l-' + id).append(span);
    }
  }
  push(t, values) {
    this.series.forEach((s, i) => {
      s.pts.push([t, values[i]]);
      while (s.pts.length && s.pts[0][0] < t - KEEP_MS) s.pts.shift();
    });
  }
  draw(now) {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const x = c.getContext('2d');
    x.setTransform(dpr, 0, 0, dpr, 0, 0);
    x.clearRect(0, 0, w, h);
    const L = 48, R = 6, T = 6, B = 18;
    let max = 0;
    for (const s of this.series) for (const [, v] of s.pts) if (v !== null && v > max) max = v;
    if (this.bytes) {
      let unit = 1;
      while (max >= 1024 * unit) unit *= 1024;
      // A power of two of the unit: quarters of 1, 2, 4… KiB/MiB/GiB.
      let m = 1;
      while (m < max / unit) m *= 2;
      max = m * unit;
    } else {
      max = niceMax(max);
    }
    // The time axis spans what the page has seen, in whole minutes, up to ten.
    let oldest = now;
    for (const s of this.series) if (s.pts.length && s.pts[0][0] < oldest) oldest = s.pts[0][0];
    const span = Math.min(KEEP_MS, Math.max(60000, Math.ceil((now - oldest) / 60000) * 60000));
    const X = (t) => L + (w - L - R) * (1 - (now - t) / span);
    const Y = (v) => T + (h - T - B) * (1 - v / max);
    x.font = '11px system-ui, sans-serif';
    x.fillStyle = '#6b7385';
    x.strokeStyle = '#e3e6ec';
    x.lineWidth = 1;
    x.textAlign = 'right';
    x.textBaseline = 'middle';
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4, y = Math.round(Y(v)) + 0.5;
      x.beginPath(); x.moveTo(L, y); x.lineTo(w - R, y); x.stroke();
      x.fillText(this.fmt(v), L - 4, y);
    }
    x.textAlign = 'center';
    x.textBaseline = 'alphabetic';
    for (let i = 5; i >= 0; i--) {
      const ago = (span * i) / 5;
      const label = i === 0 ? 'now' : ago % 60000 === 0 ? `-${ago / 60000} min` : `-${Math.round(ago / 1000)} s`;
      x.fillText(label, Math.min(Math.max(X(now - ago), L + 20), w - R - 14), h - 4);
    }
    x.save();
    x.beginPath();
    x.rect(L, 0, w - L - R, h);
    x.clip();
    x.lineWidth = 1.5;
    for (const s of this.series) {
      x.strokeStyle = s.color;
      x.beginPath();
      let pen = false;
      for (const [t, v] of s.pts) {
        if (v === null) { pen = false; continue; }
        if (pen) x.lineTo(X(t), Y(v)); else x.moveTo(X(t), Y(v));
        pen = true;
      }
      x.stroke();
    }
    x.restore();
  }
}
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  // Maxima whose quarters (the grid lines) are round numbers.
  for (const m of [1, 1.2, 1.6, 2, 2.4, 3.2, 4, 6, 8, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

const charts = {
  conns: new Chart('conns', [
    ['total', '#1d2330'], ['WebSocket', '#2f6fde'], ['SSE', '#1e9e6a'], ['stream', '#8a5cd6'],
    ['long-poll', '#e08a1e'], ['Bayeux', '#d1455b'], ['closing', '#9aa0ad'],
  ]),
  pubs: new Chart('pubs', [['publishes/s', '#e08a1e']]),
  dels: new Chart('dels', [['deliveries/s', '#2f6fde']]),
  bytes: new Chart('bytes', [['bytes out/s', '#1e9e6a']], fmtBytesShort, true),
  trouble: new Chart('trouble', [['slow consumers/s', '#d1455b'], ['drops/s', '#8a5cd6']]),
  mem: new Chart('mem', [['PSS', '#2f6fde'], ['RSS', '#9aa0ad']], fmtBytesShort, true),
};

// ---- the stream --------------------------------------------------------------------------------

let prev = null; // {uptime_ms, pid, totals}
let lastAt = 0;

function onEvent(ev) {
  const doc = JSON.parse(ev.data);
  const stats = doc.stats;
  const f = figuresOf(stats);
  const now = Date.now();
  lastAt = now;
  setStatus('live', 'live');
  $('pid').textContent = stats.processes ? stats.processes.pids.join(', ') : stats.pid;
  $('procs').textContent = stats.processes ? stats.processes.count : 1;
  $('workers').textContent = stats.workers.length;
  $('uptime').textContent = fmtDuration(doc.uptime_ms);
  $('last').textContent = new Date(now).toLocaleTimeString();

  for (const [k, v] of Object.entries(f.conns)) show('conns.' + k, v);
  for (const [k, v] of Object.entries(f.totals)) show('total.' + k, v);
  show('mem.rss', f.mem.rss);
  show('mem.pss', f.mem.pss);
  show('mem.pss_per_conn', f.conns.total ? f.mem.pss / f.conns.total : null);

  // Rates: differences of totals over the server's own clock, between two events of the same
  // process (a reconnect to another process of a shared port starts again).
  const rates = {};
  const dt = prev && prev.pid === stats.pid ? (doc.uptime_ms - prev.uptime_ms) / 1000 : 0;
  for (const [name, key] of RATES) {
    const d = dt > 0 ? f.totals[key] - prev.totals[key] : NaN;
    rates[name] = dt > 0 && d >= 0 ? d / dt : null;
    show('rate.' + name, rates[name]);
  }
  prev = { uptime_ms: doc.uptime_ms, pid: stats.pid, totals: f.totals };

  showProcesses(stats.processes);

  const c = f.conns;
  charts.conns.push(now, [c.total, c.ws, c.sse, c.stream, c.poll, c.bayeux, c.closing]);
  charts.pubs.push(now, [rates.publishes]);
  charts.dels.push(now, [rates.deliveries]);
  charts.bytes.push(now, [rates.bytes_out]);
  charts.trouble.push(now, [rates.slow_consumers, rates.drops]);
  charts.mem.push(now, [f.mem.pss, f.mem.rss]);
  for (const ch of Object.values(charts)) ch.draw(now);
}

function showProcesses(p) {
  $('processes').classList.toggle('hidden', !p);
  if (!p) return;
  const rows = $('proc-rows');
  rows.textContent = '';
  p.pids.forEach((pid, i) => {
    const open = p.open_per_process[i];
    const rss = (p.rss_per_process || [])[i];
    const pss = (p.pss_per_process || [])[i];
    const tr = document.createElement('tr');
    tr.dataset.pid = pid;
    tr.dataset.open = open;
    for (const text of [String(pid), fmtNum(open), fmtBytes(rss), fmtBytes(pss), open ? fmtBytes(pss / open) : '–']) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    rows.append(tr);
  });
}

function setStatus(state, text) {
  const s = $('status');
  s.dataset.state = state;
  s.textContent = text;
}

let es = null;
function connect() {
  es = new EventSource('/dashboard/events');
  es.onmessage = onEvent;
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED) {
      // Refused (503: too many dashboards open) or not a stream: try again later.
      setStatus('down', 'refused, retrying in 10 s');
      setTimeout(connect, 10000);
    } else {
      setStatus('down', 'reconnecting…');
    }
  };
}
connect();

// A silent stream is shown as such; the charts keep scrolling.
setInterval(() => {
  if (lastAt && Date.now() - lastAt > 3000) setStatus('down', 'no data for ' + Math.round((Date.now() - lastAt) / 1000) + ' s');
  const now = Date.now();
  for (const ch of Object.values(charts)) ch.draw(now);
}, 1000);
window.addEventListener('resize', () => { for (const ch of Object.values(charts)) ch.draw(Date.now()); });
