// Quantum Trader dashboard: follows /ws/dashboard for the live state, loads the journal's
// (or a finished report's) trades, per-pair figures, equity and candles over REST, and
// sends the operator's controls (ESS trip/reset, pause/resume, forced exit) with the
// control token and a reason the operator types each time.
// Every value is written with textContent (never innerHTML): journal strings cannot inject
// markup. Charts are SVG drawn here; nothing is fetched from anywhere but this server.
// A read token, when the API requires one, is taken from the URL fragment (#token=...) and
// kept for this tab only (sessionStorage). The control token is never stored.
"use strict";

(function () {
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  if (fragment.get("token")) {
    sessionStorage.setItem("qt-token", fragment.get("token"));
    history.replaceState(null, "", window.location.pathname);
  }
  const token = sessionStorage.getItem("qt-token");
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const SVG = "http://www.w3.org/2000/svg";
  const PAGE = 25;

  const $ = (id) => document.getElementById(id);
  const known = (value) => value !== null && value !== undefined;
  const number = (value, digits = 2) => (known(value) ? Number(value).toFixed(digits) : "–");
  const percent = (value) => (known(value) ? (value * 100).toFixed(2) + " %" : "–");
  const time = (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 16);
  const price = (value) => (known(value) ? Number(value).toPrecision(6) : "–");

  const view = {
    source: "live", // "live" or a report's file name
    snapshot: null,
    tradesOffset: 0,
    equity: [],
    range: 0,
    symbols: new Set(),
    sources: null,
    journalOk: false,
  };

  // --- small DOM helpers -------------------------------------------------------------------

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function replaceRows(tbody, items, build, empty) {
    const rows = items.map((item) => {
      const tr = document.createElement("tr");
      build(tr, item);
      return tr;
    });
    if (!rows.length && empty) {
      const tr = document.createElement("tr");
      const td = cell(tr, empty, "muted");
      td.colSpan = 12;
      rows.push(tr);
    }
    tbody.replaceChildren(...rows);
  }

  function svgNode(name, attributes, text) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceTicks(low, high, count) {
    const span = high - low || Math.abs(high) || 1;
    const raw = span / count;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
    const ticks = [];
    for (let v = Math.ceil(low / step) * step; v <= high + step * 1e-9; v += step) ticks.push(v);
    return ticks;
  }

  function timeTicks(first, last, count) {
    const ticks = [];
    for (let i = 0; i <= count; i++) ticks.push(first + (last - first) * i / count);
    return ticks;
  }

  function axes(svg, box, yTicks, yLabel, format, xTicks, xScale, yScale, showX) {
    for (const v of yTicks) {
      const y = yScale(v);
      svg.appendChild(svgNode("line", { x1: box.left, x2: box.right, y1: y, y2: y,
                                        class: "gridline" }));
      svg.appendChild(svgNode("text", { x: box.left - 6, y: y + 4, "text-anchor": "end" },
                              format(v)));
    }
    svg.appendChild(svgNode("text", { x: 12, y: box.top + (box.bottom - box.top) / 2,
                                      transform: `rotate(-90 12 ${box.top +
                                        (box.bottom - box.top) / 2})`,
                                      "text-anchor": "middle" }, yLabel));
    for (const t of xTicks) {
      const x = xScale(t);
      svg.appendChild(svgNode("line", { x1: x, x2: x, y1: box.top, y2: box.bottom,
                                        class: "gridline" }));
      if (showX) {
        svg.appendChild(svgNode("text", { x: x, y: box.bottom + 14, "text-anchor": "middle" },
                                new Date(t).toISOString().slice(5, 16).replace("T", " ")));
      }
    }
  }

  function scale(domainLow, domainHigh, rangeLow, rangeHigh) {
    const span = domainHigh - domainLow || 1;
    return (v) => rangeLow + (v - domainLow) / span * (rangeHigh - rangeLow);
  }

  // --- sources: say plainly what is missing ------------------------------------------------

  function renderBanners() {
    const messages = [];
    const sources = view.sources;
    if (view.source !== "live") {
      messages.push(["info", "Showing the finished report " + view.source +
        ": trades, per-pair figures, equity and candles are the report's, not the live " +
        "fleet's. The risk card and controls act on the live fleet."]);
    }
    if (!sources) {
      messages.push(["down", "No live data: the dashboard's live feed is not connected."]);
    } else {
      if (sources.redis.status === "down") {
        messages.push(["down", sources.redis.detail + ": ESS, positions and prices unknown."]);
      } else if (sources.redis.status === "empty") {
        messages.push(["down", sources.redis.detail + ". The ESS reads as tripped until " +
          "`quantumctl init`."]);
      }
      if (view.source === "live" && sources.journal.status !== "ok") {
        messages.push([sources.journal.status === "down" ? "down" : "warn",
          "Journal: " + sources.journal.detail + ". Trade list, per-pair figures and the " +
          "equity history are not available from it" +
          (sources.journal.status === "stale" ? " beyond what it last wrote." : ".")]);
      }
    }
    $("banners").replaceChildren(...messages.map(([kind, text]) => {
      const p = document.createElement("p");
      p.className = "banner " + kind;
      p.textContent = text;
      return p;
    }));
  }

  // --- live cards --------------------------------------------------------------------------

  function renderPositions(positions, pending) {
    const waiting = new Set((pending || []).map((p) => p.position_id));
    replaceRows($("positions"), positions, (tr, p) => {
      cell(tr, p.position_id);
      cell(tr, p.symbol);
      cell(tr, p.side, p.side);
      cell(tr, number(p.quantity, 4));
      cell(tr, price(p.entry_price));
      cell(tr, price(p.mark_price));
      cell(tr, number(p.unrealised_pnl), p.unrealised_pnl >= 0 ? "positive" : "negative");
      cell(tr, price(p.stop_loss));
      cell(tr, (p.take_profits || []).map((tp) => price(tp.price) + " (" +
        Math.round(tp.fraction * 100) + "%)").join(", ") || "–");
      cell(tr, price(p.liquidation_price));
      const td = cell(tr, "");
      if (waiting.has(p.position_id)) {
        td.textContent = "exit pending";
        td.className = "muted";
      } else {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "danger";
        button.dataset.action = "exit";
        button.dataset.position = p.position_id;
        button.textContent = "Force exit";
        td.appendChild(button);
      }
    }, "no open position");
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
    }, view.journalOk ? "no signal journalled" : "journal unavailable");
  }

  function renderEss(risk) {
    const ess = $("ess");
    ess.className = "ess";
    const redis = view.sources ? view.sources.redis.status : "down";
    if (!risk || redis === "down") {
      ess.classList.add("unknown");
      ess.textContent = "ESS state unknown: Redis unreachable";
    } else if (risk.ess.reason === "state_unknown" || risk.ess.reason === "state_unreadable") {
      ess.classList.add("unknown");
      ess.textContent = "ESS state unknown (" + risk.ess.reason + "): treated as TRIPPED; " +
        "no ESS in Redis";
    } else if (risk.ess.tripped) {
      ess.classList.add("tripped");
      ess.textContent = "ESS TRIPPED: " + risk.ess.reason + " (by " + risk.ess.by + ")";
    } else if (risk.ess.paused) {
      ess.classList.add("paused");
      ess.textContent = "Trading paused by " + risk.ess.paused_by;
    } else {
      ess.textContent = "ESS clear";
    }
    ess.dataset.tripped = risk ? String(risk.ess.tripped) : "unknown";
  }

  function renderRisk(risk) {
    renderEss(risk);
    if (!risk) return;
    $("risk-drawdown").textContent = percent(risk.drawdown);
    $("risk-max-drawdown").textContent = percent(risk.max_drawdown);
    $("risk-exposure").textContent = number(risk.gross_exposure) + " USDT (" +
      percent(risk.exposure_ratio) + " of equity)";
    $("risk-positions").textContent = String(risk.open_positions);
    if (view.source === "live") {
      $("equity-value").textContent = number(risk.equity);
      $("balance-value").textContent = number(risk.balance);
    }
    $("risk-events").replaceChildren(...risk.recent_events.map((e) => {
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
      cell(tr, known(d.data.heartbeat_age_s) ? number(d.data.heartbeat_age_s, 1) + " s" : "none");
    }, "unknown");
    replaceRows($("streams"), streams, (tr, [name, d]) => {
      cell(tr, name, "status-" + d.status);
      cell(tr, String(d.data.length));
      cell(tr, String(d.data.lag));
      cell(tr, String(d.data.pending));
    }, "unknown");
  }

  function renderModels(models) {
    const rows = [];
    const add = (name, value, className) => rows.push([name, value, className]);
    const engine = models.ai_engine;
    if (!engine.reported) {
      add("served model", "unknown: the ai-engine has not reported", "status-degraded");
    } else {
      add("served model", (engine.model || "?") + " " + (engine.model_version || ""),
        engine.load_error ? "status-down" : "status-ok");
      if (engine.load_error) add("load error", engine.load_error, "status-down");
      if (engine.model === "ensemble") {
        add("members", (engine.members_loaded || []).join(", ") || "none",
          engine.quorate === false ? "status-down" : "");
        const missing = Object.keys(engine.members_missing || {});
        if (missing.length) add("members missing", missing.join(", "), "status-degraded");
        add("quorum", String(engine.quorum) + (engine.quorate ? " (met)" : " (not met)"));
      }
    }
    const bias = models.bias;
    add("direction bias", bias.signals ? percent(bias.long_share) + " long / " +
      percent(bias.short_share) + " short of " + bias.signals + " signals" : "no signal yet");
    add("feature drift", models.drift ? time(models.drift.ts) + ": " + models.drift.detail :
      "no drift notice", models.drift ? "status-degraded" : "");
    add("shadow test", models.shadow ? models.shadow.candidate + " vs " + models.shadow.active +
      " (" + models.shadow.resolved + "/" + models.shadow.needed + ")" :
      models.clm ? "none running" : "CLM not reporting");
    const rl = models.rl_sizing;
    if (!rl) {
      add("RL sizing", "not reporting (intent-bridge has written no RL status)",
        "status-degraded");
    } else {
      add("RL sizing", rl.mode + ": " + rl.sizing_effect, rl.mode === "shadow" ? "" : "status-ok");
      add("RL policy", rl.policy_loaded ? "version " + rl.policy_version :
        "none loaded" + (rl.reason ? " (" + rl.reason + ")" : ""));
      if (known(rl.suggestions)) add("RL suggestions", String(rl.suggestions));
    }
    const trainer = models.rl_trainer;
    if (trainer && trainer.last_result) {
      const last = trainer.last_result;
      add("RL last training", last.promoted === true ? "promoted" :
        last.promoted === false ? "not promoted" : JSON.stringify(last).slice(0, 120));
    }
    const dl = $("models");
    dl.replaceChildren();
    for (const [name, value, className] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = value;
      if (className) dd.className = className;
      dl.append(dt, dd);
    }
    $("model-notices").replaceChildren(...models.notices.slice(0, 8).map((n) => {
      const li = document.createElement("li");
      li.textContent = time(n.ts) + " " + n.severity + " " + n.kind + ": " + n.detail;
      return li;
    }));
  }

  // --- equity and drawdown -----------------------------------------------------------------

  function renderEquity() {
    const svg = $("equity-chart");
    svg.replaceChildren();
    let points = view.equity;
    if (points.length && view.range > 0) {
      const end = points[points.length - 1].ts;
      points = points.filter((p) => p.ts >= end - view.range);
    }
    if (points.length < 2) {
      $("equity-note").textContent = view.source === "live" && !view.journalOk
        ? "no equity history: the journal is unavailable"
        : "not enough equity points in this range";
      svg.dataset.points = "0";
      return;
    }
    $("equity-note").textContent = time(points[0].ts) + " → " +
      time(points[points.length - 1].ts) + " UTC, " + points.length + " points";
    const box = { left: 78, right: 990, top: 10, bottom: 190 };
    const ddBox = { left: 78, right: 990, top: 210, bottom: 278 };
    const values = points.flatMap((p) => [p.equity, p.low]);
    const low = Math.min(...values);
    const high = Math.max(...values);
    const pad = (high - low) * 0.05 || Math.abs(high) * 0.01 || 1;
    const first = points[0].ts;
    const last = points[points.length - 1].ts;
    const x = scale(first, last, box.left, box.right);
    const y = scale(low - pad, high + pad, box.bottom, box.top);
    const worst = Math.max(0.0001, ...points.map((p) => p.drawdown));
    const dy = scale(0, worst * 1.1, ddBox.top, ddBox.bottom);
    const xTicks = timeTicks(first, last, 5);
    axes(svg, box, niceTicks(low - pad, high + pad, 4), "equity", (v) => v.toFixed(0), xTicks,
      x, y, false);
    axes(svg, ddBox, niceTicks(0, worst * 1.1, 2), "drawdown",
      (v) => (v * 100).toFixed(1) + "%", xTicks, x, dy, true);
    const line = points.map((p) => x(p.ts).toFixed(1) + "," + y(p.equity).toFixed(1)).join(" ");
    svg.appendChild(svgNode("polyline", { points: line, class: "equity", id: "equity-line" }));
    const area = "M" + x(first).toFixed(1) + "," + dy(0).toFixed(1) + " " +
      points.map((p) => "L" + x(p.ts).toFixed(1) + "," + dy(p.drawdown).toFixed(1)).join(" ") +
      " L" + x(last).toFixed(1) + "," + dy(0).toFixed(1) + " Z";
    svg.appendChild(svgNode("path", { d: area, class: "drawdown", id: "drawdown-area" }));
    svg.dataset.points = String(points.length);
  }

  // --- candles with trades -----------------------------------------------------------------

  function renderChart(chart) {
    const svg = $("candle-chart");
    svg.replaceChildren();
    $("chart-interval").textContent = chart.candles.length ? chart.interval + " candles" : "";
    $("chart-note").textContent = chart.note || "";
    svg.dataset.candles = String(chart.candles.length);
    svg.dataset.marks = "0";
    if (!chart.candles.length) return;
    const box = { left: 78, right: 990, top: 10, bottom: 310 };
    const candles = chart.candles;
    const first = candles[0].open_time;
    const last = candles[candles.length - 1].close_time;
    const inRange = (t) => t >= first && t <= last;
    const prices = candles.flatMap((c) => [c.high, c.low]);
    for (const t of chart.trades) {
      if (known(t.stop_loss) && (inRange(t.entry_ts) || inRange(t.exit_ts))) {
        prices.push(t.stop_loss);
      }
    }
    for (const p of chart.open) if (known(p.stop_loss)) prices.push(p.stop_loss);
    const low = Math.min(...prices);
    const high = Math.max(...prices);
    const pad = (high - low) * 0.04 || high * 0.001 || 1;
    const x = scale(first, last, box.left, box.right);
    const y = scale(low - pad, high + pad, box.bottom, box.top);
    axes(svg, box, niceTicks(low - pad, high + pad, 5), chart.symbol, (v) => v.toPrecision(6),
      timeTicks(first, last, 5), x, y, true);
    const width = Math.max(1, (box.right - box.left) / candles.length * 0.7);
    const bodies = [];
    for (const c of candles) {
      const cx = x((c.open_time + c.close_time) / 2);
      svg.appendChild(svgNode("line", { x1: cx, x2: cx, y1: y(c.high), y2: y(c.low),
                                        class: "wick" }));
      const top = y(Math.max(c.open, c.close));
      const height = Math.max(1, y(Math.min(c.open, c.close)) - top);
      bodies.push(svgNode("rect", { x: (cx - width / 2).toFixed(1), y: top.toFixed(1),
                                    width: width.toFixed(1), height: height.toFixed(1),
                                    class: c.close >= c.open ? "up" : "down" }));
    }
    svg.append(...bodies);
    let marks = 0;
    const triangle = (cx, cy, up, className, title) => {
      const d = up ? `M${cx},${cy - 7} L${cx - 6},${cy + 5} L${cx + 6},${cy + 5} Z`
        : `M${cx},${cy + 7} L${cx - 6},${cy - 5} L${cx + 6},${cy - 5} Z`;
      const path = svgNode("path", { d: d, class: className });
      path.appendChild(svgNode("title", {}, title));
      return path;
    };
    for (const t of chart.trades) {
      const entryIn = inRange(t.entry_ts);
      const exitIn = inRange(t.exit_ts);
      if (!entryIn && !exitIn) continue;
      const ex = x(Math.max(first, t.entry_ts));
      const xx = x(Math.min(last, t.exit_ts));
      if (known(t.stop_loss)) {
        svg.appendChild(svgNode("line", { x1: ex, x2: xx, y1: y(t.stop_loss), y2: y(t.stop_loss),
                                          class: "stop-line" }));
      }
      if (entryIn && exitIn) {
        svg.appendChild(svgNode("line", { x1: ex, x2: xx, y1: y(t.entry_price),
                                          y2: y(t.exit_price), class: "trade-link" }));
      }
      const summary = t.side + " " + t.trade_id + ": " + price(t.entry_price) + " → " +
        price(t.exit_price) + " (" + t.exit_reason + ", " + number(t.net_pnl) + ")" +
        (known(t.stop_loss) ? ", stop " + price(t.stop_loss) : "");
      if (entryIn) {
        svg.appendChild(triangle(ex, y(t.entry_price), t.side === "LONG",
          "entry-" + t.side, "entry " + summary));
      }
      if (exitIn) {
        const dot = svgNode("circle", { cx: xx, cy: y(t.exit_price), r: 4.5, class: "exit" });
        dot.appendChild(svgNode("title", {}, "exit " + summary));
        svg.appendChild(dot);
      }
      marks += 1;
    }
    for (const p of chart.open) {
      const start = x(Math.max(first, p.opened_ts));
      if (known(p.stop_loss)) {
        svg.appendChild(svgNode("line", { x1: start, x2: box.right, y1: y(p.stop_loss),
                                          y2: y(p.stop_loss), class: "stop-line" }));
      }
      if (inRange(p.opened_ts)) {
        svg.appendChild(triangle(start, y(p.entry_price), p.side === "LONG", "entry-" + p.side,
          "open " + p.side + " " + p.position_id + " at " + price(p.entry_price)));
      }
      marks += 1;
    }
    svg.dataset.marks = String(marks);
  }

  // --- trades and per pair -----------------------------------------------------------------

  function renderTrades(page) {
    replaceRows($("trades"), page.items, (tr, t) => {
      cell(tr, time(t.exit_ts));
      cell(tr, t.symbol);
      cell(tr, t.side, t.side);
      cell(tr, number(t.quantity, 4));
      cell(tr, price(t.entry_price));
      cell(tr, price(t.exit_price));
      cell(tr, number(t.net_pnl), t.net_pnl >= 0 ? "positive" : "negative");
      cell(tr, number(t.r_multiple));
      cell(tr, t.exit_reason);
      cell(tr, number(t.holding_seconds / 3600, 1) + " h");
    }, "no closed trade");
    const pages = Math.max(1, Math.ceil(page.total / PAGE));
    const current = Math.floor(page.offset / PAGE) + 1;
    $("trades-page").textContent = "page " + current + " of " + pages + " (" + page.total +
      " trades)";
    $("trades-prev").disabled = page.offset <= 0;
    $("trades-next").disabled = page.offset + PAGE >= page.total;
  }

  function renderStats(stats) {
    $("trades-value").textContent = String(stats.trades);
    $("winrate-value").textContent = stats.trades ? percent(stats.win_rate) : "–";
    const pnl = $("pnl-value");
    pnl.textContent = number(stats.net_pnl);
    pnl.className = !stats.trades ? "muted" : stats.net_pnl >= 0 ? "positive" : "negative";
    $("maxdd-value").textContent = percent(stats.max_drawdown);
    replaceRows($("pairs"), stats.by_symbol, (tr, s) => {
      cell(tr, s.symbol);
      cell(tr, String(s.trades));
      cell(tr, percent(s.win_rate));
      cell(tr, number(s.net_pnl), s.net_pnl >= 0 ? "positive" : "negative");
      cell(tr, number(s.fees));
      cell(tr, number(s.best));
      cell(tr, number(s.worst));
    }, "no closed trade");
    for (const s of stats.by_symbol) view.symbols.add(s.symbol);
  }

  function unavailable(reason) {
    for (const id of ["trades-value", "winrate-value", "pnl-value", "maxdd-value"]) {
      $(id).textContent = "n/a";
      $(id).className = "muted";
    }
    replaceRows($("pairs"), [], () => {}, reason);
    replaceRows($("trades"), [], () => {}, reason);
    $("trades-page").textContent = "";
    view.equity = [];
    renderEquity();
  }

  // --- loading -----------------------------------------------------------------------------

  async function load(path) {
    const response = await fetch(path, { headers });
    if (!response.ok) {
      let detail = String(response.status);
      try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new Error(path.split("?")[0] + ": " + detail);
    }
    return response.json();
  }

  const base = () => (view.source === "live" ? "/api" :
    "/api/reports/" + encodeURIComponent(view.source));

  function refreshSymbols() {
    for (const select of [$("chart-symbol"), $("trades-symbol")]) {
      const have = new Set([...select.options].map((o) => o.value));
      for (const symbol of [...view.symbols].sort()) {
        if (have.has(symbol)) continue;
        const option = document.createElement("option");
        option.value = symbol;
        option.textContent = symbol;
        select.appendChild(option);
      }
    }
  }

  async function loadTrades() {
    const symbol = $("trades-symbol").value;
    const query = "?limit=" + PAGE + "&offset=" + view.tradesOffset +
      (symbol ? "&symbol=" + encodeURIComponent(symbol) : "");
    renderTrades(await load(base() + "/trades" + query));
  }

  async function loadChart() {
    const symbol = $("chart-symbol").value;
    if (!symbol) {
      renderChart({ symbol: "", interval: "", candles: [], trades: [], open: [],
                    note: "no symbol to chart yet" });
      return;
    }
    const path = view.source === "live" ? "/api/chart?symbol=" : base() + "/chart?symbol=";
    renderChart(await load(path + encodeURIComponent(symbol) + "&limit=300"));
  }

  async function refreshSlow() {
    try {
      if (view.source !== "live") {
        const summary = await load(base());
        for (const s of summary.symbols) view.symbols.add(s);
        $("equity-value").textContent = number(summary.final_balance);
        $("balance-value").textContent = number(summary.final_balance);
        $("equity-source").textContent = summary.kind + " report " + summary.name;
      } else {
        $("equity-source").textContent = "";
      }
      if (view.source === "live" && !view.journalOk) {
        unavailable("journal unavailable");
      } else {
        const [equity, stats] = await Promise.all([load(base() + "/equity?points=2000"),
                                                   load(base() + "/stats")]);
        view.equity = equity;
        renderEquity();
        renderStats(stats);
        await loadTrades();
      }
      refreshSymbols();
      await loadChart();
      renderModels(await load("/api/models"));
    } catch (error) {
      $("updated").textContent = String(error.message || error);
    }
  }

  async function refreshReports() {
    try {
      const reports = await load("/api/reports");
      const select = $("source");
      const have = new Set([...select.options].map((o) => o.value));
      for (const r of reports) {
        if (have.has(r.name)) continue;
        const option = document.createElement("option");
        option.value = r.name;
        option.textContent = r.kind + ": " + r.name + " (" + r.trades + " trades)";
        select.appendChild(option);
      }
    } catch (error) {
      $("updated").textContent = String(error.message || error);
    }
  }

  function applySnapshot(snapshot) {
    view.snapshot = snapshot;
    view.sources = snapshot.sources;
    const wasOk = view.journalOk;
    view.journalOk = ["ok", "stale"].includes(snapshot.sources.journal.status);
    renderBanners();
    renderPositions(snapshot.positions, snapshot.exits_pending);
    for (const p of snapshot.positions) view.symbols.add(p.symbol);
    for (const p of snapshot.prices) view.symbols.add(p.symbol);
    renderSignals(snapshot.signals);
    renderRisk(snapshot.risk);
    renderHealth(snapshot.health);
    if (wasOk !== view.journalOk || !$("chart-symbol").options.length) {
      refreshSymbols();
      refreshSlow();
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
      view.sources = null;
      renderBanners();
      renderEss(null);
      setTimeout(connect, 2000);
    };
  }

  // --- controls ----------------------------------------------------------------------------

  const ACTIONS = {
    trip: { title: "Trip the emergency stop", path: "/api/control/ess/trip",
            what: "No new risk until an operator resets it; the policy's ESS actions run." },
    reset: { title: "Reset the emergency stop", path: "/api/control/ess/reset",
             what: "Clears the trip: entries may resume." },
    pause: { title: "Pause new entries", path: "/api/control/pause",
             what: "No new entries; exits go on." },
    resume: { title: "Resume new entries", path: "/api/control/resume",
              what: "Entries allowed again (unless the ESS is tripped)." },
    exit: { title: "Force the exit of a position", path: "/api/control/exit",
            what: "The exit-brain closes it in full, reduce-only." },
  };
  let pending = null;

  function ask(action, position) {
    const spec = ACTIONS[action];
    pending = { action, position };
    $("control-title").textContent = spec.title;
    $("control-what").textContent = spec.what + (position ? " Position " + position + "." : "");
    $("control-error").textContent = "";
    $("control-reason").value = "";
    $("control-dialog").showModal();
    $("control-token").focus();
  }

  async function send(event) {
    event.preventDefault();
    if (!pending) return;
    const spec = ACTIONS[pending.action];
    const body = { reason: $("control-reason").value.trim(), operator: "web" };
    if (!body.reason) {
      $("control-error").textContent = "a reason is required";
      return;
    }
    if (pending.position) body.position_id = pending.position;
    const response = await fetch(spec.path, {
      method: "POST",
      headers: { "Content-Type": "application/json",
                 Authorization: "Bearer " + $("control-token").value },
      body: JSON.stringify(body),
    });
    let answer = {};
    try { answer = await response.json(); } catch (e) { /* no body */ }
    if (!response.ok) {
      const detail = Array.isArray(answer.detail)
        ? answer.detail.map((d) => d.loc.slice(-1)[0] + ": " + d.msg).join("; ")
        : answer.detail || String(response.status);
      $("control-error").textContent = "refused (" + response.status + "): " + detail;
      return;
    }
    $("control-token").value = "";
    $("control-dialog").close();
    $("control-result").textContent = spec.title + ": done (" +
      new Date().toISOString().slice(11, 19) + " UTC)";
    pending = null;
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button) ask(button.dataset.action, button.dataset.position);
  });
  $("control-form").addEventListener("submit", send);
  $("control-cancel").addEventListener("click", () => {
    pending = null;
    $("control-token").value = "";
    $("control-dialog").close();
  });

  // --- the page's own controls -------------------------------------------------------------

  $("equity-ranges").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-range]");
    if (!button) return;
    view.range = Number(button.dataset.range);
    for (const b of $("equity-ranges").querySelectorAll("button")) {
      b.classList.toggle("active", b === button);
    }
    renderEquity();
  });
  $("trades-symbol").addEventListener("change", () => {
    view.tradesOffset = 0;
    loadTrades().catch((e) => { $("updated").textContent = String(e.message || e); });
  });
  $("trades-prev").addEventListener("click", () => {
    view.tradesOffset = Math.max(0, view.tradesOffset - PAGE);
    loadTrades().catch((e) => { $("updated").textContent = String(e.message || e); });
  });
  $("trades-next").addEventListener("click", () => {
    view.tradesOffset += PAGE;
    loadTrades().catch((e) => { $("updated").textContent = String(e.message || e); });
  });
  $("chart-symbol").addEventListener("change", () => {
    loadChart().catch((e) => { $("updated").textContent = String(e.message || e); });
  });
  $("source").addEventListener("change", () => {
    view.source = $("source").value;
    view.tradesOffset = 0;
    renderBanners();
    refreshSlow();
  });

  renderBanners();
  refreshReports();
  refreshSlow();
  setInterval(refreshSlow, 30000);
  connect();
})();
