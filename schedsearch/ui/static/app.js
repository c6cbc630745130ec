// The page of `schedsearch ui`: three views over the server's read-only JSON API.
//   #/              the searches, sortable, refreshed every few seconds
//   #/search/NAME   one search: losses and LRs per member, strategy decisions, spec
//   #/schedules     stored best schedules against base schedules and a baseline family
// Plots are uPlot (vendored under static/vendor/uplot); the lineage graph is plain SVG.
"use strict";

const REFRESH_MS = 2000;
const LIVE_PHASES = new Set(["Pending", "Running"]);
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
  "#17becf", "#bcbd22", "#7f7f7f"];
const SVG_NS = "http://www.w3.org/2000/svg";

let refreshTimer = null;
let charts = [];
let generation = 0; // bumped on every navigation: a page still loading then stops

function keepRefreshing(page, refresh) {
  if (page === generation) refreshTimer = setInterval(refresh, REFRESH_MS);
}

function color(index) {
  return COLORS[((index % COLORS.length) + COLORS.length) % COLORS.length];
}

// --- small helpers ----------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function num(value, digits = 4) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  return Number(value.toPrecision(digits)).toString();
}

function percent(value) {
  if (value === null || value === undefined) return "";
  return `${value >= 0 ? "+" : ""}${Math.round(value * 100)}%`;
}

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function searchURL(name) {
  return `/api/searches/${encodeURIComponent(name)}`;
}

function clearPage() {
  if (refreshTimer !== null) clearInterval(refreshTimer);
  refreshTimer = null;
  charts.forEach((chart) => chart.destroy());
  charts = [];
}

function pageWidth() {
  return Math.max(480, Math.min(1100, document.getElementById("main").clientWidth - 30));
}

function showError(target, error) {
  target.replaceChildren(el("p", { class: "error" }, error.message || String(error)));
}

// --- charts -------------------------------------------------------------------------------------

// Series {label, xs, ys, color, dash, width} share one x axis in uPlot: the union of their steps,
// with nulls where a series has no point (drawn across with spanGaps).
function align(series) {
  const steps = [...new Set(series.flatMap((s) => s.xs))].sort((a, b) => a - b);
  const index = new Map(steps.map((step, i) => [step, i]));
  const columns = series.map((s) => {
    const column = new Array(steps.length).fill(null);
    s.xs.forEach((x, i) => { column[index.get(x)] = s.ys[i]; });
    return column;
  });
  return [steps, ...columns];
}

function tickLabels(u, ticks) {
  // A log axis passes null for the ticks it leaves unlabelled.
  return ticks.map((t) => (t === null ? "" : num(t, 2)));
}

function logRange(u, min, max) {
  return uPlot.rangeLog(Math.max(min, max * 1e-4), max, 10, true);
}

function lineChart(target, { series, yLabel, log = false, hooks = {} }) {
  const cleaned = series.map((s) => ({
    ...s, ys: s.ys.map((y) => (y === null || (log && y <= 0) ? null : y)),
  }));
  target.dataset.series = String(cleaned.length);
  const few = Math.max(0, ...cleaned.map((s) => s.ys.filter((y) => y !== null).length)) < 30;
  const width = pageWidth();
  const options = {
    width,
    height: 300,
    // A log axis spans at most four decades below the top: a decay to ~0 would flatten the rest.
    scales: { x: { time: false }, y: log ? { distr: 3, range: logRange } : {} },
    axes: [{ label: "step" }, {
      label: yLabel, size: 60,
      values: tickLabels,
    }],
    series: [{ label: "step" }, ...cleaned.map((s) => ({
      label: s.label, stroke: s.color, width: s.width || 1.5, dash: s.dash,
      spanGaps: true, points: { show: few },
    }))],
    hooks,
  };
  const chart = new uPlot(options, align(cleaned), target);
  charts.push(chart);
  return chart;
}

// Each stage's probes as points (LR, forecast loss), one colour per stage; diverged probes have
// no forecast and are left out (the table lists them).
function stageChart(target, stages) {
  const series = stages.map((stage, i) => {
    const probes = stage.candidates.filter((c) => c.lr !== null && c.forecast !== null);
    return { label: `stage ${stage.stage}`, xs: probes.map((c) => c.lr),
      ys: probes.map((c) => c.forecast), color: color(i) };
  });
  target.dataset.series = String(series.length);
  const options = {
    width: pageWidth(),
    height: 260,
    scales: { x: { time: false, distr: 3 }, y: {} },
    axes: [{ label: "probed LR", values: tickLabels },
      { label: "forecast loss", size: 60 }],
    series: [{ label: "LR" }, ...series.map((s) => ({
      label: s.label, stroke: s.color, paths: () => null,
      points: { show: true, size: 8, fill: s.color },
    }))],
  };
  charts.push(new uPlot(options, align(series), target));
}

function stageMarks(stages) {
  // A dotted vertical line where each AutoLRS stage starts.
  return {
    draw: [(u) => {
      const ctx = u.ctx;
      ctx.save();
      ctx.setLineDash([2, 4]);
      ctx.strokeStyle = ctx.fillStyle = "#7a8599";
      ctx.font = `${Math.round(10 * devicePixelRatio)}px sans-serif`;
      for (const stage of stages) {
        const x = u.valToPos(stage.startStep, "x", true);
        if (!Number.isFinite(x)) continue;
        ctx.beginPath();
        ctx.moveTo(x, u.bbox.top);
        ctx.lineTo(x, u.bbox.top + u.bbox.height);
        ctx.stroke();
        ctx.fillText(`stage ${stage.stage}`, x + 3, u.bbox.top + 12 * devicePixelRatio);
      }
      ctx.restore();
    }],
  };
}

function exploitMarks(exploits) {
  // A dashed vertical line where a member copied another, in the copying member's colour.
  return {
    draw: [(u) => {
      const ctx = u.ctx;
      ctx.save();
      ctx.setLineDash([4, 4]);
      ctx.font = `${Math.round(10 * devicePixelRatio)}px sans-serif`;
      for (const e of exploits) {
        const x = u.valToPos(e.step, "x", true);
        if (!Number.isFinite(x)) continue;
        ctx.strokeStyle = ctx.fillStyle = color(e.dst);
        ctx.beginPath();
        ctx.moveTo(x, u.bbox.top);
        ctx.lineTo(x, u.bbox.top + u.bbox.height);
        ctx.stroke();
        ctx.fillText(`${e.dst}←${e.src}`, x + 3, u.bbox.top + 12 * devicePixelRatio);
      }
      ctx.restore();
    }],
  };
}

// --- searches -------------------------------------------------------------------------------

const COLUMNS = [
  { key: "name", title: "Name", value: (s) => s.name },
  { key: "strategy", title: "Strategy", value: (s) => s.strategy },
  { key: "workload", title: "Workload", value: (s) => s.workload },
  { key: "phase", title: "Phase", value: (s) => s.phase },
  { key: "progress", title: "Progress", value: (s) => (s.budget ? s.steps / s.budget : 0) },
  { key: "best", title: "Best", value: (s) => s.best, num: true },
  { key: "control", title: "Control (found vs base)",
    value: (s) => (s.control ? s.control.change : null), num: true },
  { key: "cost", title: "Cost (member-steps)", value: (s) => s.cost, num: true },
  { key: "created", title: "Created", value: (s) => s.created },
];
const sorting = { key: "created", dir: -1 };

function compare(a, b) {
  if (a === b) return 0;
  if (a === null || a === undefined) return 1; // missing values last either way
  if (b === null || b === undefined) return -1;
  return (a < b ? -1 : 1) * sorting.dir;
}

function searchCell(column, s) {
  if (column.key === "name") return el("a", { href: `#/search/${encodeURIComponent(s.name)}` }, s.name);
  if (column.key === "phase") {
    return el("span", { class: `phase-${s.phase}`, title: s.message || "" }, s.phase);
  }
  if (column.key === "progress") {
    const share = s.budget ? Math.min(1, s.steps / s.budget) : 0;
    const running = s.running ? `, ${s.running} of ${s.members} running` : "";
    return [el("span", { class: "progress" }, el("span", { style: `width:${share * 100}%` })),
      `${s.steps} / ${s.budget ?? "?"}${running}`];
  }
  if (column.key === "best") return s.best === null ? "–" : `${num(s.best)} ${s.metric}`;
  if (column.key === "control") {
    if (!s.control) return "–";
    return el("span", { title: s.control.summary || "" },
      `${num(s.control.found)} vs ${num(s.control.base)} ${percent(s.control.change)}`);
  }
  if (column.key === "cost") return s.cost === null ? "–" : String(s.cost);
  if (column.key === "created") return new Date(s.created).toLocaleString();
  return column.value(s);
}

function searchesTable(target, searches) {
  if (!searches.length) {
    target.replaceChildren(el("p", { class: "muted", id: "no-searches" },
      "No searches yet. Run one with: schedsearch run SPEC.yaml"));
    return;
  }
  const column = COLUMNS.find((c) => c.key === sorting.key);
  const rows = [...searches].sort((a, b) => compare(column.value(a), column.value(b))
    || a.name.localeCompare(b.name));
  const head = el("tr", {}, COLUMNS.map((c) => el("th", {
    "data-key": c.key,
    class: c.key === sorting.key ? (sorting.dir > 0 ? "sorted-asc" : "sorted-desc") : null,
    onclick: () => {
      sorting.dir = sorting.key === c.key ? -sorting.dir : 1;
      sorting.key = c.key;
      searchesTable(target, searches);
    },
  }, c.title)));
  const body = rows.map((s) => el("tr", { "data-search": s.name },
    COLUMNS.map((c) => el("td", { class: c.num ? "num" : null }, searchCell(c, s)))));
  target.replaceChildren(el("table", { id: "searches" }, el("thead", {}, head),
    el("tbody", {}, body)));
}

async function searchesPage(main) {
  const body = el("div", { id: "searches-body" }, el("p", { class: "muted" }, "Loading…"));
  main.replaceChildren(el("h1", {}, "Searches"), body);
  const page = generation;
  const refresh = async () => {
    try {
      const { searches } = await getJSON("/api/searches");
      if (page === generation) searchesTable(body, searches);
    } catch (error) {
      showError(body, error);
    }
  };
  await refresh();
  keepRefreshing(page, refresh);
}

// --- one search ---------------------------------------------------------------------------------

function facts(search) {
  const pairs = [
    ["Strategy", search.strategy],
    ["Workload", search.workload],
    ["Phase", search.phase + (search.message ? ` (${search.message})` : "")],
    ["Progress", `${search.steps} / ${search.budget ?? "?"} steps; ${search.members} member(s)`
      + (search.running ? `, ${search.running} running` : "")],
    ["Best", search.best === null ? "–"
      : `${num(search.best)} ${search.metric} (member ${search.bestMember}; selected on the `
        + "validation data it is scored on)"],
    ["Control", search.control ? search.control.summary : "–"],
    ["Cost", search.cost === null ? "–" : `${search.cost} member-steps`],
    ["Created", new Date(search.created).toLocaleString()],
  ];
  return el("dl", { class: "facts" }, pairs.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function lossSeries(members, best) {
  const series = [];
  for (const m of members) {
    const thick = m.member === best ? 2.5 : 1.2;
    if (m.valLoss.some((v) => v !== null)) {
      series.push({ label: `member ${m.member} val_loss`, xs: m.steps, ys: m.valLoss,
        color: color(m.member), width: thick });
    }
    if (m.loss.some((v) => v !== null)) {
      series.push({ label: `member ${m.member} train loss`, xs: m.steps, ys: m.loss,
        color: color(m.member), width: 1, dash: [5, 4] });
    }
  }
  return series;
}

function lrSeries(detail) {
  const series = detail.members.map((m) => ({
    label: `member ${m.member}`, xs: m.steps, ys: m.lr, color: color(m.member), width: 1.2,
  }));
  if (detail.best) {
    series.push({ label: "best schedule", xs: detail.best.steps, ys: detail.best.lr,
      color: "#111", width: 2.5 });
  }
  if (detail.base) {
    series.push({ label: "base schedule", xs: detail.base.steps, ys: detail.base.lr,
      color: "#999", width: 1.5, dash: [6, 4] });
  }
  return series;
}

// The lineage: one lane per member; a node where a stretch of training starts (step 0, or an
// exploit that replaced the member's weights), an arrow from the stretch that was copied.
function lineageGraph(graph, totalSteps, bestMember) {
  const members = [...new Set(graph.nodes.map((n) => n.member))].sort((a, b) => a - b);
  const lane = new Map(members.map((m, i) => [m, 24 + i * 30]));
  const width = pageWidth();
  const height = 24 + members.length * 30;
  const x = (step) => 70 + (Math.min(step, totalSteps) / Math.max(totalSteps, 1)) * (width - 100);
  const byMember = new Map(members.map((m) => [m, graph.nodes.filter((n) => n.member === m)
    .sort((a, b) => a.step - b.step)]));
  // The stretches the best member's weights came through.
  const bestChain = new Set();
  const incoming = new Map(graph.edges.map((e) => [e.to, e.from]));
  const bestNodes = byMember.get(bestMember) || [];
  let cursor = bestNodes.length ? bestNodes[bestNodes.length - 1].id : null;
  while (cursor) {
    bestChain.add(cursor);
    const node = graph.nodes.find((n) => n.id === cursor);
    const earlier = (byMember.get(node.member) || []).filter((n) => n.step < node.step);
    cursor = incoming.get(cursor) || (earlier.length ? earlier[earlier.length - 1].id : null);
  }
  const root = svg("svg", { class: "lineage", id: "lineage", width, height,
    viewBox: `0 0 ${width} ${height}` });
  root.append(svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9",
    refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
  svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#7a8599" }))));
  for (const m of members) {
    root.append(svg("line", { class: "lane", x1: x(0), x2: x(totalSteps), y1: lane.get(m),
      y2: lane.get(m) }));
    root.append(svg("text", { x: 4, y: lane.get(m) + 4 }, `member ${m}`));
  }
  for (const e of graph.edges) {
    const from = graph.nodes.find((n) => n.id === e.from);
    const to = graph.nodes.find((n) => n.id === e.to);
    const y1 = lane.get(from.member);
    const y2 = lane.get(to.member);
    const bend = x(e.step) - 18;
    root.append(svg("path", { class: "edge", "marker-end": "url(#arrow)",
      d: `M ${x(e.step)} ${y1} C ${bend} ${(y1 + y2) / 2}, ${bend} ${(y1 + y2) / 2}, `
        + `${x(e.step)} ${y2 + (y2 > y1 ? -6 : 6)}` }));
  }
  for (const m of members) {
    const nodes = byMember.get(m);
    nodes.forEach((node, i) => {
      const end = i + 1 < nodes.length ? nodes[i + 1].step : totalSteps;
      const best = bestChain.has(node.id);
      const group = svg("g", { class: `lineage-node${best ? " best" : ""}`,
        "data-member": String(node.member), "data-step": String(node.step) });
      group.append(svg("title", {}, `member ${node.member} from step ${node.step}`
        + (node.lr === null ? "" : ` at lr ${num(node.lr)}`)));
      group.append(svg("line", { class: "segment", x1: x(node.step), x2: x(end),
        y1: lane.get(m), y2: lane.get(m), stroke: color(m) }));
      group.append(svg("circle", { cx: x(node.step), cy: lane.get(m), r: best ? 5 : 4,
        fill: color(m) }));
      if (node.lr !== null) {
        group.append(svg("text", { x: x(node.step) + 5, y: lane.get(m) - 6 }, num(node.lr, 3)));
      }
      root.append(group);
    });
  }
  return root;
}

function table(id, headers, rows) {
  return el("table", { id }, el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c))))));
}

function strategySections(detail) {
  const ev = detail.events;
  const total = detail.search.budget || 1;
  const out = [];
  if (!ev.recorded) {
    out.push(el("p", { class: "muted", id: "no-events" }, "This source records no strategy "
      + "decisions for this search (a cluster keeps each member's latest point only)."));
  }
  if (ev.members && ev.members.length) {
    out.push(el("h2", {}, `Members as PBT ranks them (${ev.rankedBy} objective)`),
      table("ranked", ["member", "step", "LR", `${ev.rankedBy} ${detail.search.metric}`, "state"],
        ev.members.map((m) => [m.member, m.step, num(m.lr), num(m.objective), m.status])));
  }
  if (ev.lineage && ev.lineage.nodes.length) {
    out.push(el("h2", {}, "Lineage (who copied whom)"),
      lineageGraph(ev.lineage, total, detail.search.bestMember));
  }
  if (ev.exploits.length) {
    out.push(el("h2", {}, `Exploits (${ev.exploits.length})`), table("exploits",
      ["step", "member", "copied", "LR before", "LR after", "why"],
      ev.exploits.map((e) => [e.step, e.dst, e.src, num(e.oldLR), num(e.newLR), e.reason])));
  }
  if (ev.stages.length) {
    const probes = el("div", { class: "chart", id: "stage-chart" });
    out.drawStages = () => stageChart(probes, ev.stages);
    out.push(el("h2", {}, "AutoLRS stages: probed LRs and their forecast losses"), probes,
      table("stages",
      ["stage", "from step", "steps", "probe steps", "trained at LR", "probed LRs → forecast"],
      ev.stages.map((s) => [s.stage, s.startStep, s.steps, s.probeSteps, num(s.lr),
        s.candidates.map((c) => `${num(c.lr, 3)} → ${c.diverged ? "diverged" : num(c.forecast)}`)
          .join(", ")])));
  }
  if (ev.syncs.length) {
    const chart = el("div", { class: "chart", id: "hdet-chart" });
    out.push(el("h2", {}, "HDET syncs: base LR and replicas"), chart, table("syncs",
      ["step", "base LR", "replica LR multipliers", "interval losses", "auto-LR"],
      ev.syncs.map((s) => [s.step, num(s.baseLR), s.multipliers.map((m) => num(m, 3)).join(", "),
        s.losses.map((l) => num(l)).join(", "), s.autoLR || ""])));
    out.drawHdet = () => {
      const steps = ev.syncs.map((s) => s.step);
      const replicas = Math.max(0, ...ev.syncs.map((s) => s.multipliers.length));
      const series = [{ label: "base LR", xs: steps, ys: ev.syncs.map((s) => s.baseLR),
        color: "#111", width: 2.5 }];
      for (let r = 0; r < replicas; r++) {
        series.push({ label: `replica ${r}`, xs: steps, color: color(r), width: 1,
          ys: ev.syncs.map((s) => (s.baseLR === null || s.multipliers[r] === undefined
            ? null : s.baseLR * s.multipliers[r])) });
      }
      lineChart(chart, { series, yLabel: "learning rate", log: true });
    };
  }
  return out;
}

function renderSearch(main, detail) {
  charts.forEach((chart) => chart.destroy());
  charts = [];
  const s = detail.search;
  const lossChart = el("div", { class: "chart", id: "loss-chart" });
  const lrChart = el("div", { class: "chart", id: "lr-chart" });
  const strategy = strategySections(detail);
  const hasHistory = detail.members.length > 0;
  main.replaceChildren(
    el("h1", { id: "search-title" }, s.name), facts(s),
    el("h2", {}, "Losses per member (solid: validation, dashed: training)"),
    hasHistory ? lossChart : el("p", { class: "muted" }, "No member has reported yet."),
    el("h2", {}, "Learning rate per member, best and base schedule"), lrChart,
    ...strategy,
    el("h2", {}, "Spec"), el("pre", { class: "spec", id: "spec" }, detail.specYAML),
  );
  if (hasHistory) {
    lineChart(lossChart, { series: lossSeries(detail.members, s.bestMember), yLabel: "loss",
      hooks: exploitMarks(detail.events.exploits) });
  }
  lineChart(lrChart, { series: lrSeries(detail), yLabel: "learning rate", log: true,
    hooks: stageMarks(detail.events.stages) });
  if (strategy.drawHdet) strategy.drawHdet();
  if (strategy.drawStages) strategy.drawStages();
}

async function searchPage(main, name) {
  main.replaceChildren(el("p", { class: "muted" }, "Loading…"));
  const page = generation;
  const refresh = async () => {
    let detail;
    try {
      detail = await getJSON(searchURL(name));
    } catch (error) {
      showError(main, error);
      return;
    }
    if (page !== generation) return;
    const scroll = window.scrollY;
    renderSearch(main, detail);
    window.scrollTo(0, scroll);
    if (!LIVE_PHASES.has(detail.search.phase) && refreshTimer !== null) {
      clearInterval(refreshTimer); // a finished search no longer changes
      refreshTimer = null;
    }
  };
  await refresh();
  keepRefreshing(page, refresh);
}

// --- schedules ----------------------------------------------------------------------------------

async function schedulesPage(main) {
  main.replaceChildren(el("p", { class: "muted" }, "Loading…"));
  let info;
  let schedules;
  try {
    [info, { schedules }] = await Promise.all([getJSON("/api/info"), getJSON("/api/schedules")]);
  } catch (error) {
    showError(main, error);
    return;
  }
  if (!schedules.length) {
    main.replaceChildren(el("h1", {}, "Schedules"), el("p", { class: "muted", id: "no-schedules" },
      "No stored schedules yet: a search stores its best schedule as it goes."));
    return;
  }
  const family = el("select", { id: "baseline-family" }, el("option", { value: "" }, "none"),
    info.families.map((f) => el("option", { value: f }, f)));
  const showBase = el("input", { type: "checkbox", id: "show-base", checked: true });
  const chart = el("div", { class: "chart", id: "schedules-chart" });
  const status = el("span", { class: "muted", id: "baseline-status" });
  const baselines = new Map();
  const draw = () => {
    charts.forEach((c) => c.destroy());
    charts = [];
    const series = [];
    schedules.forEach((s, i) => {
      series.push({ label: s.name, xs: s.schedule.steps, ys: s.schedule.lr, color: color(i),
        width: 2.2 });
      if (showBase.checked && s.base) {
        series.push({ label: `${s.search} base (${s.baseFamily})`, xs: s.base.steps,
          ys: s.base.lr, color: color(i), width: 1, dash: [6, 4] });
      }
      const extra = baselines.get(s.search);
      if (extra) {
        series.push({ label: `${s.search} as ${extra.family}`, xs: extra.schedule.steps,
          ys: extra.schedule.lr, color: color(i), width: 1, dash: [2, 3] });
      }
    });
    lineChart(chart, { series, yLabel: "learning rate", log: true });
  };
  family.addEventListener("change", async () => {
    baselines.clear();
    status.textContent = "";
    if (family.value) {
      try {
        // A family is laid out like a search's base schedule: only while that search exists.
        const answers = await Promise.all(schedules.filter((s) => s.searchExists).map((s) => getJSON(
          `${searchURL(s.search)}/baseline?family=${encodeURIComponent(family.value)}`)));
        answers.forEach((a) => baselines.set(a.search, a));
      } catch (error) {
        status.textContent = error.message;
      }
    }
    draw();
  });
  showBase.addEventListener("change", draw);
  const rows = schedules.map((s) => [
    s.name, s.searchExists ? el("a", { href: `#/search/${encodeURIComponent(s.search)}` }, s.search)
      : `${s.search} (deleted)`,
    s.strategy || "–", s.objective ? `${num(s.objective.value)} ${s.objective.metric}` : "–",
    s.control ? s.control.summary : "–", s.schedule.totalSteps,
    el("span", { class: "downloads" }, info.formats.map((f) => el("a", {
      href: `${searchURL(s.search)}/download?format=${f}`, download: true,
      "data-format": f }, f))),
  ]);
  main.replaceChildren(
    el("h1", {}, "Schedules"),
    el("div", { class: "controls" },
      el("label", {}, showBase, " base schedules"),
      el("label", {}, "baseline family (each search's peak, floor, warm-up, budget): ", family),
      status),
    chart,
    table("schedules", ["schedule", "search", "strategy", "objective", "control", "steps",
      "download"], rows),
  );
  draw();
}

// --- routing ------------------------------------------------------------------------------------

async function route() {
  clearPage();
  generation += 1;
  const main = document.getElementById("main");
  const hash = decodeURIComponent(location.hash.replace(/^#/, "")) || "/";
  const page = hash.startsWith("/search/") ? "search"
    : hash === "/schedules" ? "schedules" : "searches";
  document.querySelectorAll("header nav a").forEach((a) => {
    a.classList.toggle("active", a.dataset.page === page
      || (page === "search" && a.dataset.page === "searches"));
  });
  if (page === "search") await searchPage(main, hash.slice("/search/".length));
  else if (page === "schedules") await schedulesPage(main);
  else await searchesPage(main);
}

window.addEventListener("hashchange", route);
getJSON("/api/info").then((info) => {
  document.getElementById("where").textContent = `reading ${info.where} · read-only`;
}).catch(() => {});
route();
