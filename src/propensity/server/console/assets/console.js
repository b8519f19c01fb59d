/* propensity console: fills each page from its data endpoint. Charts are uPlot (vendored, MIT); every chart has
   its numbers in a table beside it (under "Data"), so the page reads the same without seeing the canvas. */
"use strict";
(function () {
  const boot = JSON.parse(document.getElementById("boot").textContent);
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const content = document.getElementById("content");
  const status = document.getElementById("status");
  const isAdmin = boot.role === "admin";
  const COLORS = ["#1f5fa8", "#d9730d", "#2e8540", "#c0392b", "#7d3c98", "#8c564b", "#d63384", "#5f6b7a"];

  // ------------------------------------------------------------------------------------------- helpers
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  const nf = new Intl.NumberFormat("en-US");
  const fmt = {
    int: (v) => (v === null || v === undefined ? "—" : nf.format(Math.round(v))),
    num: (v, d = 3) => (v === null || v === undefined || !isFinite(v) ? "—" : Number(v).toFixed(d)),
    pct: (v, d = 1) => (v === null || v === undefined || !isFinite(v) ? "—" : (100 * v).toFixed(d) + "%"),
    money: (v) => (v === null || v === undefined || !isFinite(v) ? "—" : (v < 0 ? "−" : "") + nf.format(Math.abs(v).toFixed(2))),
    age: (s) => {
      if (s === null || s === undefined) return "—";
      const a = Math.abs(s);
      const t = a < 120 ? `${Math.round(a)} s` : a < 7200 ? `${Math.round(a / 60)} min` : a < 172800 ? `${Math.round(a / 3600)} h` : `${Math.round(a / 86400)} d`;
      return s < 0 ? `in ${t}` : t;
    },
    time: (iso) => (iso ? String(iso).replace("T", " ").slice(0, 16) + " UTC" : "—"),
    short: (id) => (id ? String(id).slice(0, 14) : "—"),
  };
  function say(text, kind) {
    status.textContent = text;
    status.className = "status" + (kind ? " " + kind : "");
  }
  async function api(path, opts) {
    const o = Object.assign({ credentials: "same-origin", headers: {} }, opts || {});
    if (o.body !== undefined && typeof o.body !== "string") {
      o.body = JSON.stringify(o.body);
      o.headers["Content-Type"] = "application/json";
    }
    if ((o.method || "GET") !== "GET") o.headers["X-CSRF-Token"] = csrf;
    const r = await fetch(path, o);
    if (r.status === 401) {
      location.href = "/console/login?next=" + encodeURIComponent(location.pathname + location.search);
      throw new Error("signed out");
    }
    const body = await r.json().catch(() => ({}));
    if (!r.ok) {
      const err = new Error((body.error && body.error.message) || `HTTP ${r.status}`);
      err.status = r.status;
      throw err;
    }
    return body;
  }
  function section(title, ...children) {
    const id = "s-" + title.toLowerCase().replace(/[^a-z0-9]+/g, "-");
    return el("section", { "aria-labelledby": id }, el("h2", { id, text: title }), ...children);
  }
  function table(caption, headers, rows, attrs) {
    return el("div", { class: "table-wrap" },
      el("table", attrs || {},
        el("caption", { text: caption }),
        el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, rows.length ? rows.map((r) => el("tr", {}, r.map((c, i) =>
          i === 0 ? el("th", { scope: "row" }, c) : el("td", {}, c)))) :
          el("tr", {}, el("td", { colspan: headers.length, class: "empty", text: "nothing yet" })))));
  }
  function dl(pairs) {
    return el("dl", { class: "facts" }, pairs.map(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
  }
  function pill(status) {
    return el("span", { class: "pill " + status, text: status });
  }

  // A chart: uPlot over aligned series (x, then one y per series), with a data table for screen readers.
  function chart(title, opts) {
    const fig = el("figure", { class: "chart", role: "group", "aria-label": title });
    const plot = el("div", { class: "plot", "aria-hidden": "true" });
    fig.append(el("figcaption", { text: title }), plot);
    const rows = opts.x.map((x, i) => [opts.xfmt ? opts.xfmt(x) : fmt.num(x, 3), ...opts.series.map((s) => fmt.num(s.y[i], opts.digits || 3))]);
    fig.append(el("details", {}, el("summary", { text: "Data" }),
      table(title, [opts.xlabel, ...opts.series.map((s) => s.label)], rows)));
    requestAnimationFrame(() => {
      const width = Math.max(280, plot.clientWidth || 480);
      const series = [{ label: opts.xlabel }].concat(opts.series.map((s, i) => ({
        label: s.label,
        stroke: s.color || COLORS[i % COLORS.length],
        width: s.width || 2,
        dash: s.dash,
        fill: s.fill,
        paths: s.steps ? uPlot.paths.stepped({ align: 1 }) : s.points ? () => null : undefined,
        points: { show: !!(s.points || opts.points), size: s.size || 6, fill: s.color || COLORS[i % COLORS.length] },
        spanGaps: true,
      })));
      const u = new uPlot({
        width, height: opts.height || 240,
        scales: { x: opts.xrange ? { time: !!opts.time, range: opts.xrange } : { time: !!opts.time }, y: opts.yrange ? { range: opts.yrange } : {} },
        axes: [{ label: opts.xlabel, values: opts.xticks }, { label: opts.ylabel, size: 60 }],
        series, bands: opts.bands, legend: { live: false },
        hooks: opts.whiskers ? { draw: [(u) => whiskers(u, opts.x, opts.whiskers)] } : opts.hooks,
      }, [opts.x, ...opts.series.map((s) => s.y)], plot);
      fig.uplot = u;
      if (opts.onready) opts.onready(u);
    });
    return fig;
  }
  // Vertical interval bars (95% intervals) drawn over a chart at each x.
  function whiskers(u, xs, w) {
    const ctx = u.ctx;
    ctx.save();
    ctx.strokeStyle = "#1f5fa8";
    ctx.lineWidth = 2 * devicePixelRatio;
    xs.forEach((x, i) => {
      if (w.lo[i] === null || w.hi[i] === null) return;
      const px = u.valToPos(x, "x", true), lo = u.valToPos(w.lo[i], "y", true), hi = u.valToPos(w.hi[i], "y", true);
      const cap = 6 * devicePixelRatio;
      ctx.beginPath();
      ctx.moveTo(px, lo); ctx.lineTo(px, hi);
      ctx.moveTo(px - cap, lo); ctx.lineTo(px + cap, lo);
      ctx.moveTo(px - cap, hi); ctx.lineTo(px + cap, hi);
      ctx.stroke();
    });
    ctx.restore();
  }
  function timeChart(title, times, series, ylabel) {
    const x = times.map((t) => Date.parse(t) / 1000);
    // One run: a week either side, so the point sits in a readable span rather than years of axis.
    const xrange = x.length === 1 ? [x[0] - 7 * 86400, x[0] + 7 * 86400] : undefined;
    return chart(title, { x, time: true, xrange, xlabel: "as of", ylabel, xfmt: (v) => fmt.time(new Date(v * 1000).toISOString()),
      series: Object.entries(series).map(([label, y]) => ({ label, y })), points: true });
  }
  function fail(err) {
    say(err.message, "error");
  }

  // ------------------------------------------------------------------------------------------- overview
  async function overview() {
    const d = await api("/console/api/overview");
    const b = d.bundles;
    content.append(section("Models",
      table("Production and canary bundles per action",
        ["action", "production", "AUC", "ECE", "age", "canary", "AUC", "ECE"],
        b.actions.map((a) => [a.action,
          a.production ? el("a", { href: `/console/models/${a.production.bundle}`, text: fmt.short(a.production.bundle) }) : "—",
          fmt.num(a.production && a.production.roc_auc), fmt.num(a.production && a.production.ece, 4),
          fmt.age(a.production && a.production.age_s),
          a.canary ? el("a", { href: `/console/models/${a.canary.bundle}`, text: `${fmt.short(a.canary.bundle)} (${fmt.pct(b.canary_share, 0)})` }) : "—",
          fmt.num(a.canary && a.canary.roc_auc), fmt.num(a.canary && a.canary.ece, 4)])),
      el("p", { class: "note", text: `${b.candidates} candidate bundle(s) waiting.` + (d.served ? ` This server serves ${fmt.short(d.served)}.` : "") })));
    const alerts = d.alerts.open;
    content.append(section("Open alerts",
      el("p", { class: "note", text: d.alerts.run_id ? `Latest monitor run as of ${fmt.time(d.alerts.as_of)}: ${d.alerts.status}. Most severe first: a failure of the data itself (freshness, volume) leads, the drift it explains comes last.` : "The monitors have not run yet (propensity monitor)." }),
      table("Firing monitors, most severe first", ["monitor", "subject", "status", "value", "warning", "alert"],
        alerts.slice(0, 15).map((a) => [a.monitor, a.explained_by ? `${a.subject} (explained by ${a.explained_by})` : a.subject, pill(a.status), fmt.num(a.value), fmt.num(a.warning), fmt.num(a.alert)])),
      alerts.length > 15 ? el("p", { class: "note" }, `${alerts.length - 15} more on `, el("a", { href: "/console/monitoring", text: "Monitoring" })) : null));
    content.append(section("Events",
      table("Freshness and volume per source", ["source", "last event available", "silent for", "last 24 h of data", "events"],
        d.events.sources.map((s) => [s.source, fmt.time(s.last_available_at), fmt.age(s.silent_s), fmt.int(s.events_last_day), fmt.int(s.events)]))));
    const s = d.scoring;
    content.append(section("Scoring and deliveries",
      s ? dl([["last scoring run", s.run_id], ["status", pill(s.status)], ["scored", `${fmt.time(s.scored_at)} (${fmt.age(s.age_s)} ago)`],
        ["as of", fmt.time(s.as_of)], ["rows", fmt.int(s.rows)], ["model", fmt.short(s.model_version)]]) : el("p", { text: "No scoring run yet (propensity score)." }),
      table("Last delivery per destination", ["destination", "run", "status", "at", "rows"],
        d.deliveries.map((x) => [x.destination, x.run_id || "—", pill(x.status), fmt.time(x.at), fmt.int(x.rows)]))));
  }

  // ------------------------------------------------------------------------------------------- targeting
  async function targeting() {
    const params = new URLSearchParams(location.search);
    const d = await api("/console/api/targeting" + (params.get("action") ? "?action=" + encodeURIComponent(params.get("action")) : ""));
    const c = d.curve;
    const P = c.threshold.length;
    const policy = d.policy;
    const actionSel = el("select", { id: "action", onchange: (e) => { location.search = "?action=" + encodeURIComponent(e.target.value); } },
      d.actions.map((a) => el("option", { value: a, selected: a === d.action }, a)));
    const modeT = el("input", { type: "radio", name: "mode", id: "mode-threshold", value: "threshold", checked: true });
    const modeK = el("input", { type: "radio", name: "mode", id: "mode-top", value: "top" });
    const slider = el("input", { type: "range", id: "slider", min: 0, max: Math.max(0, P - 1), step: 1, value: 0, "aria-describedby": "slider-help" });
    const cost = el("input", { type: "number", id: "cost", min: 0, step: "0.01", value: policy.cost || 0.5, inputmode: "decimal" });
    const value = el("input", { type: "number", id: "value", min: 0, step: "0.01", value: policy.value > 1 ? policy.value : 20, inputmode: "decimal" });
    const out = {};
    const outRow = (key, label) => { out[key] = el("output", { id: "out-" + key, for: "slider cost value" }); return [el("dt", { text: label }), el("dd", {}, out[key])]; };
    const numbers = el("dl", { class: "facts big", "aria-live": "polite", id: "numbers" },
      outRow("threshold", "score at least"), outRow("reached", "customers reached"), outRow("share", "share of eligible (treated)"),
      outRow("expected", "expected conversions"), outRow("rate", "expected conversion rate"),
      outRow("cost", "expected cost"), outRow("value", "expected value"), outRow("profit", "expected profit"));
    const best = el("p", { id: "best", class: "best" });
    const goBest = el("button", { type: "button", id: "go-best", text: "Move to the most profitable point" });
    const holdout = d.holdout ? `${fmt.int(d.control)} eligible customers are in the control group of experiment ${d.holdout.experiment} (${fmt.pct(d.holdout.control_share, 0)}) and are kept out.` : "No experiment covers this action: nobody is kept out.";
    content.append(section("Who to send " + d.action + " to",
      el("p", { class: "note" }, `From scoring run ${d.run.run_id} (as of ${fmt.time(d.run.as_of)}, model ${fmt.short(d.run.model_version)}): ${fmt.int(d.eligible)} of ${fmt.int(d.customers)} customers eligible. ${holdout}`),
      d.meaning ? el("p", { class: "note", text: "A score is the " + d.meaning + "." }) : null,
      el("div", { class: "controls" },
        el("label", { for: "action" }, "Action ", actionSel),
        el("fieldset", {}, el("legend", { text: "Slide over" }),
          el("label", { for: "mode-threshold" }, modeT, " score threshold"), el("label", { for: "mode-top" }, modeK, " top k%")),
        el("label", { for: "cost" }, "Cost per contact ", cost),
        el("label", { for: "value" }, "Value per conversion ", value)),
      el("div", { class: "slider" }, el("label", { for: "slider", id: "slider-label", text: "Customers to reach" }), slider,
        el("p", { id: "slider-help", class: "help", text: "Arrow keys move one step; Page Up/Down ten. Right reaches more customers." })),
      numbers, best, goBest));

    let mode = "threshold";
    let point = 0;
    const topSteps = 1000;
    function econ() {
      const k = Math.max(0, parseFloat(cost.value) || 0), v = Math.max(0, parseFloat(value.value) || 0);
      return { k, v };
    }
    function bestPoint() {
      const { k, v } = econ();
      let bi = -1, bp = 0;
      for (let i = 0; i < P; i++) { const p = v * c.expected[i] - k * c.reached[i]; if (p > bp + 1e-12) { bp = p; bi = i; } }
      return bi;
    }
    function pointForTop(pos) {
      const want = Math.max(1, Math.ceil((pos / topSteps) * d.pool - 1e-9));
      let lo = 0, hi = P - 1;
      while (lo < hi) { const m = (lo + hi) >> 1; if (c.reached[m] >= want) hi = m; else lo = m + 1; }
      return lo;
    }
    let profitChart = null;
    function render() {
      if (!P) { say("No eligible, treated customer has a score for this action.", "warn"); return; }
      point = mode === "threshold" ? +slider.value : pointForTop(+slider.value);
      const { k, v } = econ();
      const reached = c.reached[point], expected = c.expected[point];
      out.threshold.textContent = fmt.num(c.threshold[point], 4);
      out.threshold.dataset.value = c.threshold[point];
      out.reached.textContent = fmt.int(reached); out.reached.dataset.value = reached;
      out.share.textContent = fmt.pct(reached / d.pool);
      out.expected.textContent = fmt.num(expected, 1); out.expected.dataset.value = expected;
      out.rate.textContent = fmt.pct(expected / reached);
      out.cost.textContent = fmt.money(k * reached); out.value.textContent = fmt.money(v * expected);
      const profit = v * expected - k * reached;
      out.profit.textContent = fmt.money(profit); out.profit.dataset.value = profit;
      out.profit.className = profit < 0 ? "neg" : "pos";
      const text = mode === "threshold" ? `score ≥ ${fmt.num(c.threshold[point], 4)}, ${fmt.int(reached)} customers` : `top ${(slider.value / 10).toFixed(1)}%, ${fmt.int(reached)} customers`;
      slider.setAttribute("aria-valuetext", text);
      const bi = bestPoint();
      best.dataset.index = bi;
      best.textContent = bi < 0 ? "At this cost and value no customer is worth contacting: each one's expected value is below the cost." :
        `Profit is highest at score ≥ ${fmt.num(c.threshold[bi], 4)}: ${fmt.int(c.reached[bi])} customers, ${fmt.num(c.expected[bi], 1)} expected conversions, profit ${fmt.money(v * c.expected[bi] - k * c.reached[bi])}.`;
      goBest.disabled = bi < 0;
      if (profitChart && profitChart.uplot) profitChart.uplot.setData(profitData());
    }
    function setMode(m) {
      const keep = c.reached[point] || 1;
      mode = m;
      if (m === "threshold") { slider.max = Math.max(0, P - 1); slider.value = point; }
      else { slider.max = topSteps; slider.min = 1; slider.value = Math.max(1, Math.round((keep / d.pool) * topSteps)); }
      if (m === "threshold") slider.min = 0;
      document.getElementById("slider-label").textContent = m === "threshold" ? "Score threshold (right: lower threshold, more customers)" : "Top k% of eligible customers by score";
      render();
    }
    modeT.addEventListener("change", () => setMode("threshold"));
    modeK.addEventListener("change", () => setMode("top"));
    slider.addEventListener("input", render);
    cost.addEventListener("input", render);
    value.addEventListener("input", render);
    goBest.addEventListener("click", () => { const bi = bestPoint(); if (bi >= 0) { if (mode !== "threshold") modeT.click(); slider.value = bi; render(); slider.focus(); } });

    // Start at the saved policy's threshold, else the most profitable point.
    const startAt = policy.threshold > 0 ? c.threshold.findLastIndex((t) => t >= policy.threshold) : bestPoint();
    slider.value = Math.max(0, startAt);
    function profitData() {
      const { k, v } = econ();
      const bi = bestPoint();
      return [c.reached, c.expected.map((e, i) => v * e - k * c.reached[i]),
        c.reached.map((r, i) => (i === bi ? v * c.expected[i] - k * r : null)),
        c.reached.map((r, i) => (i === point ? v * c.expected[i] - k * r : null))];
    }
    const thin = (arr) => arr; // the curve is at most 2,000 points
    profitChart = chart("Expected profit by customers reached", {
      x: thin(c.reached), xlabel: "customers reached", ylabel: "expected profit", digits: 2, xfmt: fmt.int,
      series: [{ label: "expected profit", y: [] }, { label: "most profitable", y: [], points: true, size: 10, color: "#2e8540" },
        { label: "chosen", y: [], points: true, size: 10, color: "#c0392b" }],
      onready: (u) => u.setData(profitData()),
    });
    const r = d.realised;
    const realisedFig = r ? chart("Realised vs expected rate per score bucket", {
      x: r.buckets.map((b) => b.bucket), xlabel: "bucket (1 = highest scores)", ylabel: "rate", xfmt: String,
      series: [{ label: "realised rate", y: r.buckets.map((b) => b.realised_rate), points: true, size: 9 },
        { label: "mean score (expected)", y: r.buckets.map((b) => b.mean_score), dash: [5, 4] }],
    }) : el("p", { text: "No matured window to compare with yet." });
    content.append(section("Expected vs realised", el("div", { class: "grid" }, profitChart,
      el("div", {}, realisedFig, r ? el("p", { class: "note", text: r.note + ` (${fmt.int(r.rows)} rows).` }) : null))));
    if (r) content.append(section("Realised rate per bucket", table("Latest matured window, ten equal buckets by score",
      ["bucket", "customers", "lowest score", "mean score", "realised rate"],
      r.buckets.map((b) => [String(b.bucket), fmt.int(b.n), fmt.num(b.min_score, 4), fmt.num(b.mean_score, 4), fmt.pct(b.realised_rate)]))));

    // Saving (admins): a named target, optionally attached to destinations and made the action's policy.
    const saved = table("Targets saved for " + d.action, ["name", "rule", "cost", "value", "saved by", "at"],
      d.targets.map((t) => [t.name, t.threshold !== undefined ? `score ≥ ${fmt.num(t.threshold, 4)}` : `top ${fmt.pct(t.top_share)}`,
        fmt.money(t.cost_per_contact), fmt.money(t.value_per_conversion), t.saved_by || "—", fmt.time(t.saved_at)]));
    if (isAdmin) {
      const name = el("input", { id: "save-name", name: "name", required: true, pattern: "[a-z][a-z0-9_-]*", value: `${d.action.replace(/[^a-z0-9_-]/g, "_")}_target`, "aria-describedby": "name-help" });
      const note = el("input", { id: "save-note", name: "note", maxlength: 1000 });
      const dests = d.destinations.map((x) => el("label", { class: "check" }, el("input", { type: "checkbox", name: "destination", value: x.name, checked: x.target && d.targets.some((t) => t.name === x.target) }), ` ${x.name} (${x.type})`));
      const asPolicy = el("input", { type: "checkbox", id: "as-policy" });
      const result = el("p", { id: "save-status", role: "status", "aria-live": "polite" });
      const form = el("form", { id: "save-form", class: "save" },
        el("label", { for: "save-name" }, "Name ", name),
        el("p", { id: "name-help", class: "help", text: "lowercase letters, digits, _ and -; an existing name is replaced" }),
        el("label", { for: "save-note" }, "Note ", note),
        d.destinations.length ? el("fieldset", {}, el("legend", { text: "Send to these destinations (activate publishes only the target's customers)" }), dests) : null,
        el("label", { class: "check", for: "as-policy" }, asPolicy, " Also make this the decision policy for " + d.action + " (threshold, cost, value)"),
        el("button", { type: "submit", id: "save" }, "Save target"), result);
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        const { k, v } = econ();
        const target = { name: name.value.trim(), action: d.action, cost_per_contact: k, value_per_conversion: v, note: note.value || undefined };
        if (mode === "threshold") target.threshold = c.threshold[point]; else target.top_share = +slider.value / topSteps;
        const destinations = [...form.querySelectorAll('input[name="destination"]:checked')].map((x) => x.value);
        result.textContent = "Saving…";
        try {
          const res = await api("/console/api/targets", { method: "POST", body: { target, destinations, as_policy: asPolicy.checked, cut: c.threshold[point] } });
          result.textContent = `Saved ${res.saved.name} (${mode === "threshold" ? "score ≥ " + fmt.num(res.saved.threshold, 4) : "top " + fmt.pct(res.saved.top_share)})` +
            (res.destinations.length ? `; ${res.destinations.join(", ")} will publish only its customers at the next activation.` : ".");
          result.className = "ok";
        } catch (err) { result.textContent = "Not saved: " + err.message; result.className = "error"; }
      });
      content.append(section("Save as a target", form, saved));
    } else {
      content.append(section("Saved targets", el("p", { class: "note", text: "Saving a target needs the admin role." }), saved));
    }
    render();
  }

  // ------------------------------------------------------------------------------------------- models
  async function models() {
    const d = await api("/console/api/models");
    const actions = [...new Set(d.bundles.flatMap((b) => Object.keys(b.actions)))].sort();
    content.append(section("Bundles", table("Every bundle in the registry, newest first",
      ["bundle", "stage", "created", "feature set", ...actions.map((a) => a + " AUC / ECE (model)")],
      d.bundles.map((b) => [el("a", { href: `/console/models/${b.id}`, text: b.id }), pill(b.stage), `${fmt.time(b.created_at)} (${fmt.age(b.age_s)} ago)`,
        fmt.short(b.feature_set_version), ...actions.map((a) => b.actions[a] ? `${fmt.num(b.actions[a].roc_auc)} / ${fmt.num(b.actions[a].ece, 4)} (${b.actions[a].kind})` : "—")]))));
    if (isAdmin) content.append(section("Roll back", moveForm("rollback", "/console/api/models/rollback", "Roll production back to the previous bundle", false)));
  }

  function moveForm(id, url, label, withForce) {
    const reason = el("textarea", { id: id + "-reason", required: true, minlength: 3, rows: 2, "aria-describedby": id + "-help" });
    const force = withForce ? el("input", { type: "checkbox", id: id + "-force" }) : null;
    const result = el("p", { id: id + "-status", role: "status", "aria-live": "polite" });
    const form = el("form", { id: id + "-form", class: "move" },
      el("label", { for: id + "-reason" }, "Reason (recorded in the registry's history)"), reason,
      el("p", { id: id + "-help", class: "help", text: "Say why, for whoever reads the history later." }),
      force ? el("label", { class: "check", for: id + "-force" }, force, " Override the promotion gate (the reason is recorded as the override's)") : null,
      el("button", { type: "submit", id: id + "-button" }, label), result);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      result.textContent = "Working…";
      try {
        const res = await api(url, { method: "POST", body: { reason: reason.value, force: force ? force.checked : false } });
        result.textContent = res.promoted ? `Promoted ${res.promoted}.` : `Production is now ${res.production}.`;
        result.className = "ok";
        setTimeout(() => location.reload(), 600);
      } catch (err) { result.textContent = "Refused: " + err.message; result.className = "error"; }
    });
    return form;
  }

  async function model() {
    const id = boot.params.bundle;
    const d = await api("/console/api/models/" + encodeURIComponent(id));
    document.querySelector("h1").textContent = "Model " + d.id;
    const L = d.lineage;
    content.append(section("Lineage", dl([["stage", pill(d.stage || "unknown")], ["created", fmt.time(d.created_at)],
      ["feature set", L.feature_set_version || "—"], ["features", fmt.int(L.features)], ["training set", L.training_set || "—"],
      ["data", L.data ? `${fmt.time(L.data.start || L.data.first_event)} → ${fmt.time(L.data.end || L.data.last_event)}` : "—"],
      ["code", L.code_version || "—"], ["seed", String(L.seed)]])));
    if (isAdmin && d.stage === "candidate") content.append(section("Promote", moveForm("promote", `/console/api/models/${d.id}/promote`, "Promote to production", true)));
    if (isAdmin && d.stage === "production") content.append(section("Roll back", moveForm("rollback", "/console/api/models/rollback", "Roll production back to the previous bundle", false)));
    const names = Object.keys(d.actions);
    const pick = el("select", { id: "model-action" }, names.map((n) => el("option", { value: n }, n)));
    const holder = el("div", {});
    content.append(section("Per action", el("label", { for: "model-action" }, "Action ", pick), holder));
    function show(name) {
      holder.replaceChildren();
      const a = d.actions[name];
      const w = a.training_window || {};
      const c = a.choice || { candidates: a.candidates, backtest: [], warnings: [] };
      const served = c.kind ? [["served model", c.kind + (c.weights ? ` (weights ${Object.entries(c.weights).map(([k, v]) => `${k} ${fmt.num(v, 2)}`).join(", ")})` : "") + (c.trees ? `, ${fmt.int(c.trees)} trees` : "")]] : [];
      holder.append(dl([["training window", `${fmt.time(w.first_cutoff)} → ${fmt.time(w.last_cutoff)}`], ["calibration from", fmt.time(w.calibration_start)],
        ["test from", fmt.time(w.test_start)], ["test AUC", fmt.num(a.headline.roc_auc)], ["test ECE", fmt.num(a.headline.ece, 4)], ["base rate", fmt.pct(a.headline.base_rate)], ...served]));
      const rows = c.candidates.map((m) => [m.name, m.kind || "—", m.champion ? "★ champion" : "challenger", m.calibration || "—", fmt.num(m.log_loss, 4), fmt.num(m.roc_auc), fmt.num(m.ece, 4), m.where]);
      if (c.reference) rows.push([c.reference.name, "logistic", "reference", "—", fmt.num(c.reference.log_loss, 4), "—", "—", c.reference.where]);
      holder.append(table("Champion and challengers", ["model", "kind", "role", "calibration", "log loss", "AUC", "ECE", "measured on"], rows, { id: "candidates" }));
      holder.append(el("p", { class: "note", id: "champion-why" }, c.why ? "Why the champion won: " + c.why + "." :
        "This bundle records no candidates: its model is shown against the logistic baseline it was measured against."));
      if (c.backtest.length) {
        holder.append(table("Backtest: the training procedure refitted at rolling origins (" + (c.procedure || "") + ")",
          ["origin", "rows (positives)", "calibration", "AUC", "log loss", "ECE", "baseline AUC", "baseline log loss"],
          c.backtest.map((f) => f.skipped ? [fmt.time(f.origin), "skipped: " + f.skipped, "", "", "", "", "", ""] :
            [fmt.time(f.origin) + (f.test_split ? " (test split)" : ""), `${fmt.int(f.rows)} (${fmt.int(f.positives)})`, f.calibration || "—",
              fmt.num(f.roc_auc), fmt.num(f.log_loss, 4), fmt.num(f.ece, 4), fmt.num(f.baseline_roc_auc), fmt.num(f.baseline_log_loss, 4)])));
      }
      if (c.warnings.length) holder.append(el("ul", { class: "warnings", "aria-label": "Training warnings" }, c.warnings.map((t) => el("li", { text: t }))));
      const rel = a.reliability;
      const dec = a.deciles;
      const grid = el("div", { class: "grid" });
      if (rel.length) grid.append(chart("Reliability (test split)", { x: rel.map((b) => b.mean_predicted), xlabel: "mean predicted", ylabel: "realised rate",
        series: [{ label: "realised", y: rel.map((b) => b.realised_rate), points: true, size: 8 }, { label: "perfect", y: rel.map((b) => b.mean_predicted), dash: [4, 4], color: "#999" }] }));
      if (dec.length) {
        grid.append(chart("Cumulative gains", { x: [0, ...dec.map((x) => x.cumulative_share)], xlabel: "share of customers (by score)", ylabel: "share of conversions",
          series: [{ label: "model", y: [0, ...dec.map((x) => x.cumulative_gain)] }, { label: "random", y: [0, ...dec.map((x) => x.cumulative_share)], dash: [4, 4], color: "#999" }] }));
        grid.append(chart("Lift per decile", { x: dec.map((x) => x.decile), xlabel: "decile (1 = highest)", ylabel: "lift", xfmt: String,
          series: [{ label: "lift", y: dec.map((x) => x.lift), points: true, size: 8 }, { label: "random", y: dec.map(() => 1), dash: [4, 4], color: "#999" }] }));
      }
      const th = a.training_hist;
      if (th.shares.length) {
        const centres = th.edges.slice(0, -1).map((e, i) => (e + th.edges[i + 1]) / 2);
        const series = [{ label: "at training (test split)", y: th.shares, steps: true }];
        if (a.now_hist) series.push({ label: `now (run ${fmt.short(d.now_run.run_id)})`, y: a.now_hist.shares, steps: true });
        grid.append(chart("Score distribution: at training vs now", { x: centres, xlabel: "score", ylabel: "share", series }));
      }
      holder.append(grid);
      const imp = a.importance;
      const top = Math.max(...imp.map((r) => r.mean_abs_shap || r.gain || 0), 1e-12);
      const gains = imp.some((r) => r.gain);  // a linear model has no split gain
      holder.append(table("Feature importance (mean |SHAP| on the test split)", ["feature", "mean |SHAP|", ...(gains ? ["gain"] : []), ""],
        imp.map((r) => [r.feature, fmt.num(r.mean_abs_shap, 4), ...(gains ? [fmt.num(r.gain, 1)] : []),
          el("span", { class: "bar", style: `width:${(12 * (r.mean_abs_shap || r.gain || 0)) / top}em`, "aria-hidden": "true" })])));
    }
    pick.addEventListener("change", () => show(pick.value));
    if (names.length) show(names[0]);
    content.append(section("History", table("Registry moves of this bundle", ["when", "event", "reason", "by", "previous"],
      d.history.map((h) => [fmt.time(h.at), h.event + (h.forced ? " (forced)" : ""), h.reason || "—", h.by || "—", fmt.short(h.previous || h.from)]))));
  }

  // ------------------------------------------------------------------------------------------- monitoring
  async function monitoring() {
    const d = await api("/console/api/monitoring");
    if (!d.runs) { content.append(el("p", { text: "The monitors have not run yet: run `propensity monitor`, or let `propensity serve` run them on schedule." })); return; }
    const grid = el("div", { class: "grid" });
    if (Object.keys(d.feature_psi).length) grid.append(timeChart("Feature drift (PSI), the largest now", d.times, d.feature_psi, "PSI"));
    if (Object.keys(d.score_psi).length) grid.append(timeChart("Score drift (PSI) per action", d.times, d.score_psi, "PSI"));
    if (Object.keys(d.calibration_ece).length) grid.append(timeChart("Calibration (ECE on the latest matured period)", d.times, d.calibration_ece, "ECE"));
    if (Object.keys(d.expected_auc_drop).length) grid.append(timeChart("Expected AUC drop (CBPE, no labels needed)", d.times, d.expected_auc_drop, "AUC drop"));
    content.append(section("Drift and calibration over time", grid));
    for (const [action, perf] of Object.entries(d.performance)) {
      const ps = perf.periods || [];
      const rows = ps.map((p) => [fmt.time(p.as_of), fmt.int(p.rows), fmt.num(p.auc), fmt.num(p.expected_auc), fmt.pct(p.realised_rate), fmt.pct(p.expected_rate), fmt.num(p.ece, 4)]);
      if (perf.expected) rows.push(["today (no labels yet)", fmt.int(perf.expected.n), "—", fmt.num(perf.expected.expected_auc), "—", fmt.pct(perf.expected.expected_rate), "—"]);
      const parts = [table(`${action}: measured on matured periods vs estimated (CBPE)`, ["period", "rows", "AUC measured", "AUC estimated", "rate realised", "rate estimated", "ECE"], rows)];
      if (ps.length) parts.unshift(chart(`${action}: AUC measured vs estimated`, { x: ps.map((p) => Date.parse(p.as_of) / 1000), time: true, xlabel: "period", ylabel: "AUC",
        xfmt: (v) => fmt.time(new Date(v * 1000).toISOString()),
        series: [{ label: "measured", y: ps.map((p) => p.auc), points: true }, { label: "estimated (CBPE)", y: ps.map((p) => p.expected_auc), dash: [5, 4], points: true }] }));
      content.append(section(`Estimated vs measured: ${action}`, ...parts));
    }
    content.append(section("Alert history", table("Firing monitors per run, newest first", ["as of", "status", "firing"],
      d.history.map((h) => [fmt.time(h.as_of), pill(h.status), h.firing.length ? h.firing.slice(0, 8).map((f) => `${f.monitor}:${f.subject} (${f.status})`).join(", ") + (h.firing.length > 8 ? ` and ${h.firing.length - 8} more` : "") : "none"]))));
  }

  // ------------------------------------------------------------------------------------------- experiments
  async function experiments() {
    const d = await api("/console/api/experiments");
    if (!d.holdouts.length) { content.append(el("p", { text: "No experiment is declared (experiments.holdouts in propensity.yaml): nothing is held out, so no lift can be measured." })); return; }
    content.append(section("Experiments", table("Holdout groups", ["experiment", "actions", "control share"],
      d.holdouts.map((h) => [h.name, (h.actions || ["every action"]).join(", "), fmt.pct(h.control_share, 0)]))));
    const lift = d.lift;
    if (lift) {
      content.append(el("p", { class: "note", text: `Lift on scoring run ${lift._meta.scoring_run} (data until ${fmt.time(lift._meta.data_end)}); ${d.method}.` }));
      for (const [action, e] of Object.entries(lift.actions)) {
        const segs = Object.entries(e.lift);
        const rows = segs.map(([seg, l]) => [seg, `${fmt.int(l.x_treated)} / ${fmt.int(l.n_treated)}`, `${fmt.int(l.x_control)} / ${fmt.int(l.n_control)}`, fmt.pct(l.rate_treated), fmt.pct(l.rate_control),
          l.absolute === null ? "—" : `${fmt.pct(l.absolute, 2)} [${fmt.pct(l.absolute_ci && l.absolute_ci[0], 2)}, ${fmt.pct(l.absolute_ci && l.absolute_ci[1], 2)}]`,
          l.relative === null ? "—" : `${fmt.num(l.relative, 2)}× [${fmt.num(l.relative_ci && l.relative_ci[0], 2)}, ${fmt.num(l.relative_ci && l.relative_ci[1], 2)}]`]);
        const parts = [el("p", { class: "note", text: `${e.experiment}: ${fmt.int(e.matured_rows)} of ${fmt.int(e.scored_rows)} scored rows have matured outcomes.` }),
          table(`${action}: treated vs control, 95% intervals`, ["segment", "treated (converted / n)", "control", "treated rate", "control rate", "absolute lift", "relative lift"], rows)];
        const ok = segs.filter(([, l]) => l.absolute !== null && l.absolute_ci);
        if (ok.length) parts.push(chart(`${action}: absolute lift per segment with 95% interval`, {
          x: ok.map((_, i) => i + 1), xrange: [0.5, ok.length + 0.5], xlabel: "segment", ylabel: "absolute lift", xfmt: (i) => ok[i - 1] ? ok[i - 1][0] : String(i),
          xticks: (u, vals) => vals.map((v) => (Number.isInteger(v) && ok[v - 1] ? ok[v - 1][0] : "")),
          series: [{ label: "absolute lift (bars: 95% interval)", y: ok.map(([, l]) => l.absolute), points: true, size: 9 },
            { label: "no effect", y: ok.map(() => 0), color: "#c0392b", width: 1 }],
          yrange: [Math.min(0, ...ok.map(([, l]) => l.absolute_ci[0])) - 0.02, Math.max(0, ...ok.map(([, l]) => l.absolute_ci[1])) + 0.02],
          whiskers: { lo: ok.map(([, l]) => l.absolute_ci[0]), hi: ok.map(([, l]) => l.absolute_ci[1]) } }));
        const up = d.uplift[action];
        if (up && up.curve) {
          const cv = up.curve;
          const last = cv[cv.length - 1] || [1, 0];
          parts.push(chart(`${action}: uplift (Qini) curve, run ${fmt.short(d.uplift_run)}`, { x: cv.map((p) => p[0]), xlabel: "share targeted (by predicted uplift)", ylabel: "incremental conversions",
            series: [{ label: "uplift model", y: cv.map((p) => p[1]) }, { label: "random", y: cv.map((p) => (last[0] ? (p[0] / last[0]) * last[1] : 0)), dash: [4, 4], color: "#999" }] }));
          parts.push(el("p", { class: "note", text: `Qini ${fmt.num(up.qini)}; ${up.beats_random ? "beats" : "does not beat"} random targeting.` }));
        } else {
          parts.push(el("p", { class: "note", text: up && up.skipped ? `Uplift: ${up.skipped}` : "Uplift curves come from `propensity experiments report` (it fits the uplift models); none stored yet." }));
        }
        content.append(section(`Lift: ${action}`, ...parts));
      }
    }
  }

  // ------------------------------------------------------------------------------------------- customers
  async function customers() {
    const input = el("input", { id: "customer-id", name: "customer_id", required: true, autocomplete: "off", maxlength: 256 });
    const results = el("div", { id: "customer" });
    const form = el("form", { role: "search", id: "lookup" }, el("label", { for: "customer-id" }, "Customer id "), input, el("button", { type: "submit", text: "Look up" }));
    content.append(form, results);
    say(boot.scopes.includes("identifiers") ? "Identifiers are shown in full (your key has the identifiers scope)." : "Identifiers are masked (your key lacks the identifiers scope).");
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      results.replaceChildren();
      say("Looking up…");
      try {
        const d = await api("/console/api/customers?customer_id=" + encodeURIComponent(input.value.trim()));
        say(d.found ? `Customer ${d.customer}: ${fmt.int(d.event_count)} events.` : `No customer ${d.customer} in the latest run or the event log.`);
        const rc = (codes) => (codes || []).map((r) => `${r.feature} ${r.direction === "down" || r.direction === "-" ? "↓" : "↑"}`).join(", ") || "—";
        results.append(section("Scores in the latest run", d.run ? el("p", { class: "note", text: `Run ${d.run.run_id}, as of ${fmt.time(d.run.as_of)}.` }) : null,
          table("Scores, reasons and decisions", ["action", "score", "percentile", "segment", "eligible", "next best action", "decided by", "group", "top reasons"],
            d.scores.map((s) => [s.action, fmt.num(s.score, 4), fmt.num(s.percentile, 1), s.segment || "—", s.eligible ? "yes" : "no", s.next_best_action || "—", s.decision_policy || "—", s.holdout_group || "—", rc(s.reason_codes)]))));
        if (d.live) results.append(section("Scored live now", table(`Model ${fmt.short(d.live.model_version)}, at ${fmt.time(d.live.scored_at)}`, ["action", "probability", "percentile", "segment", "eligible", "reasons"],
          Object.entries(d.live.scores).map(([a, s]) => [a, fmt.num(s.probability, 4), fmt.num(s.percentile, 1), s.segment || "—", s.eligible ? "yes" : "no", rc(s.reason_codes)]))));
        results.append(section("Attributes", table("Current attribute values" + (d.masked ? " (identifiers masked)" : ""), ["attribute", "value", "since"],
          d.attributes.map((a) => [a.attribute, a.value === null ? "—" : String(a.value), fmt.time(a.valid_from)]))));
        results.append(section("Recent events", table(`The latest ${d.events.length} of ${fmt.int(d.event_count)} events`, ["time", "type", "source", "amount", "details"],
          d.events.map((ev) => [fmt.time(ev.event_time), ev.event_type, ev.source || "—", ev.amount === null || ev.amount === undefined ? "—" : fmt.num(ev.amount, 2),
            [ev.sku, ev.category, ev.campaign_id, ev.channel].filter(Boolean).join(" · ") + (ev.properties ? " " + JSON.stringify(ev.properties) : "")]))));
      } catch (err) { fail(err); }
    });
    const q = new URLSearchParams(location.search).get("customer_id");
    if (q) { input.value = q; form.requestSubmit(); }
  }

  const PAGES = { overview, targeting, models, model, monitoring, experiments, customers };
  const started = performance.now();
  (PAGES[boot.page] || overview)().then(() => {
    if (boot.page !== "customers") say(`Loaded in ${Math.round(performance.now() - started)} ms.`);
    document.body.dataset.ready = "true";
  }).catch((err) => { fail(err); document.body.dataset.ready = "error"; });
})();
