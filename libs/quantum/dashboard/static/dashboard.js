// Quantum Trader dashboard: loads the REST views once, then follows /ws/dashboard.
// Every value is written with textContent (never innerHTML): journal strings cannot inject
// markup. A read token, when the API requires one, is taken from the URL fragment
// (#token=...) and kept for this tab only (sessionStorage).
"use strict";

(function () {
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  if (fragment.get("token")) {
    sessionStorage.setItem("qt-token", fragment.get("token"));
    history.replaceState(null, "", window.location.pathname);
  }
  const token = sessionStorage.getItem("qt-token");
  const headers = token ? { Authorization: "Bearer " + token } : {};

  const $ = (id) => document.getElementById(id);
  const number = (value, digits = 2) =>
    value === null || value === undefined ? "–" : Number(value).toFixed(digits);
  const percent = (value) => (value === null || value === undefined ? "–" : (value * 100).toFixed(2) + " %");
  const time = (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 19);

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function replaceRows(tbody, items, build) {
    const rows = items.map((item) => {
      const tr = document.createElement("tr");
      build(tr, item);
      return tr;
    });
    tbody.replaceChildren(...rows);
  }

  function renderPositions(positions) {
    replaceRows($("positions"), positions, (tr, p) => {
      cell(tr, p.position_id);
      cell(tr, p.symbol);
      cell(tr, p.side, p.side);
      cell(tr, number(p.quantity, 4));
      cell(tr, number(p.entry_price, 4));
      cell(tr, number(p.mark_price, 4));
      cell(tr, number(p.unrealised_pnl), p.unrealised_pnl >= 0 ? "positive" : "negative");
      cell(tr, number(p.stop_loss, 4));
      cell(tr, (p.take_profits || []).map((tp) => number(tp.price, 4) + " (" +
        Math.round(tp.fraction * 100) + "%)").join(", ") || "–");
      cell(tr, number(p.liquidation_price, 4));
    });
    if (!positions.length) {
      replaceRows($("positions"), [null], (tr) => cell(tr, "no open position", "muted"));
    }
  }

  function renderSignals(signals) {
    replaceRows($("signals"), signals, (tr, s) => {
      cell(tr, time(s.ts));
      cell(tr, s.symbol);
      cell(tr, s.direction, s.direction);
      cell(tr, number(s.confidence, 3));
      const votes = cell(tr, "");
      for (const vote of s.votes) {
        const span = document.createElement("span");
        span.className = "vote " + vote.direction;
        span.textContent = vote.member + " " + vote.direction + " " + number(vote.confidence, 2);
        votes.appendChild(span);
      }
      cell(tr, s.blocked_reason || "");
    });
  }

  function renderRisk(risk) {
    const ess = $("ess");
    ess.className = "ess";
    if (risk.ess.tripped) {
      ess.classList.add("tripped");
      ess.textContent = "ESS TRIPPED: " + risk.ess.reason + " (by " + risk.ess.by + ")";
    } else if (risk.ess.paused) {
      ess.classList.add("paused");
      ess.textContent = "Trading paused by " + risk.ess.paused_by;
    } else {
      ess.textContent = "ESS clear";
    }
    $("risk-drawdown").textContent = percent(risk.drawdown);
    $("risk-max-drawdown").textContent = percent(risk.max_drawdown);
    $("risk-exposure").textContent = number(risk.gross_exposure) + " USDT (" +
      percent(risk.exposure_ratio) + " of equity)";
    $("risk-positions").textContent = String(risk.open_positions);
    $("equity-value").textContent = number(risk.equity);
    $("balance-value").textContent = number(risk.balance);
    const events = $("risk-events");
    events.replaceChildren(...risk.recent_events.map((e) => {
      const li = document.createElement("li");
      li.textContent = time(e.ts) + " " + e.severity + " " + e.kind + ": " + e.detail;
      return li;
    }));
  }

  function renderHealth(health) {
    const overall = $("overall");
    overall.textContent = "health " + health.status;
    overall.className = "badge status-" + health.status;
    const services = [];
    const streams = [];
    for (const [name, dependency] of Object.entries(health.dependencies)) {
      if (name.startsWith("service:")) services.push([name.slice(8), dependency]);
      if (name.startsWith("stream:")) streams.push([name.slice(7), dependency]);
    }
    replaceRows($("services"), services, (tr, [name, d]) => {
      cell(tr, name);
      cell(tr, d.status, "status-" + d.status);
      cell(tr, d.data.heartbeat_age_s === null || d.data.heartbeat_age_s === undefined
        ? "none" : number(d.data.heartbeat_age_s, 1) + " s");
    });
    replaceRows($("streams"), streams, (tr, [name, d]) => {
      cell(tr, name, "status-" + d.status);
      cell(tr, String(d.data.length));
      cell(tr, String(d.data.lag));
      cell(tr, String(d.data.pending));
    });
  }

  function renderEquity(points) {
    if (points.length < 2) return;
    const values = points.flatMap((p) => [p.equity, p.low]);
    const low = Math.min(...values);
    const high = Math.max(...values);
    const span = high - low || 1;
    const first = points[0].ts;
    const width = points[points.length - 1].ts - first || 1;
    const xy = (ts, value) =>
      ((ts - first) / width * 1000).toFixed(1) + "," + (210 - (value - low) / span * 200).toFixed(1);
    $("equity-line").setAttribute("points", points.map((p) => xy(p.ts, p.equity)).join(" "));
    $("equity-low").setAttribute("points", points.map((p) => xy(p.ts, p.low)).join(" "));
    $("equity-from").textContent = time(first);
    $("equity-to").textContent = time(points[points.length - 1].ts);
  }

  function renderStats(stats) {
    $("trades-value").textContent = String(stats.trades);
    $("winrate-value").textContent = percent(stats.win_rate);
    const pnl = $("pnl-value");
    pnl.textContent = number(stats.net_pnl);
    pnl.className = stats.net_pnl >= 0 ? "positive" : "negative";
  }

  async function load(path) {
    const response = await fetch(path, { headers });
    if (!response.ok) throw new Error(path + ": " + response.status);
    return response.json();
  }

  let equityPoints = [];
  async function refreshSlow() {
    try {
      const [equity, stats] = await Promise.all([load("/api/equity?points=400"), load("/api/stats")]);
      equityPoints = equity;
      renderEquity(equityPoints);
      renderStats(stats);
    } catch (error) {
      $("updated").textContent = String(error);
    }
  }

  function applySnapshot(snapshot) {
    renderPositions(snapshot.positions);
    renderSignals(snapshot.signals);
    renderRisk(snapshot.risk);
    renderHealth(snapshot.health);
    const last = snapshot.equity;
    if (last && equityPoints.length && last.ts > equityPoints[equityPoints.length - 1].ts) {
      equityPoints.push({ ts: last.ts, equity: last.equity, low: last.equity });
      renderEquity(equityPoints);
    }
    $("updated").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    const query = token ? "?token=" + encodeURIComponent(token) : "";
    const socket = new WebSocket(scheme + window.location.host + "/ws/dashboard" + query);
    const badge = $("connection");
    socket.onmessage = (message) => {
      const data = JSON.parse(message.data);
      if (data.type === "snapshot") {
        applySnapshot(data);
        badge.dataset.state = "live";
        document.body.dataset.state = "live";
        badge.textContent = "live";
      } else if (data.type === "error") {
        badge.textContent = "source unavailable: " + data.detail;
      }
    };
    socket.onclose = () => {
      badge.dataset.state = "closed";
      document.body.dataset.state = "closed";
      badge.textContent = "disconnected, retrying";
      setTimeout(connect, 2000);
    };
  }

  refreshSlow();
  setInterval(refreshSlow, 30000);
  connect();
})();
