// The run's dashboard: draws the status the engine writes (status.json). Live, it fetches the
// status every 2 s without reloading; in the HTML report the final status is embedded.
(function () {
  "use strict";
  const COLOURS = {
    startup: "#9aa4b2", success: "#2e9e5b", fail: "#e3a21a", error: "#d64545",
    running: "#3b82f6", cancelled: "#7c3aed",
  };
  const CAUSE_COLOURS = ["#d64545", "#7c3aed", "#db2777", "#0891b2", "#ea580c", "#4d7c0f"];
  const charts = {};
  const $ = (id) => document.getElementById(id);
  const money = (v) => (v == null ? "–" : "$" + Number(v).toFixed(4));
  const time = (ts) => (ts == null ? "" : new Date(ts * 1000).toISOString().slice(11, 19));

  function chart(id, config) {
    if (!charts[id]) {
      config.options = Object.assign({ animation: false, responsive: true, maintainAspectRatio: false }, config.options || {});
      charts[id] = new Chart($(id), config);
    } else {
      charts[id].data = config.data;
      charts[id].update("none");
    }
    return charts[id];
  }

  function counts(s) {
    const t = s.tasks || {};
    for (const k of ["total", "completed", "succeeded", "failed", "errored", "running", "pending"]) {
      $("count-" + k).textContent = t[k] == null ? "0" : String(t[k]);
    }
    $("cost-current").textContent = money((s.cost || {}).current_usd);
    $("cost-estimated").textContent = money((s.cost || {}).estimated_total_usd);
    $("run-id").textContent = s.run_id || "";
    $("tier").textContent = s.tier || "";
    $("run-status").textContent = s.status || "";
    $("updated").textContent = "updated " + (s.timestamp || "");
  }

  function progress(s, d) {
    const t0 = d.started_at || 0;
    const done = (d.done_series || []).map(([t, v]) => ({ x: t - t0, y: v }));
    const total = (s.tasks || {}).total || 0;
    const mean = (s.performance || {}).avg_task_duration;
    const end = done.length ? done[done.length - 1].x : 0;
    const ideal = [];
    if (mean && d.workers) {
      const finish = (total * mean) / d.workers;
      ideal.push({ x: 0, y: 0 }, { x: Math.min(finish, Math.max(end, finish)), y: total });
    }
    chart("chart-progress", {
      type: "line",
      data: { datasets: [
        { label: "tasks done", data: done, borderColor: "#2e9e5b", stepped: true, pointRadius: 0 },
        { label: "ideal (workers x mean task time)", data: ideal, borderColor: "#9aa4b2", borderDash: [6, 4], pointRadius: 0 },
      ] },
      options: { scales: { x: { type: "linear", title: { display: true, text: "s" } }, y: { beginAtZero: true, suggestedMax: total } } },
    });
  }

  function cost(s, d) {
    const t0 = d.started_at || 0;
    const series = (d.cost_series || []).map(([t, v]) => ({ x: t - t0, y: v }));
    const c = s.cost || {};
    const estimate = [];
    if (series.length && c.estimated_total_usd != null) {
      const last = series[series.length - 1];
      const rate = c.current_hourly_rate || 0;
      const toGo = Math.max(0, c.estimated_total_usd - last.y);
      const seconds = rate > 0 ? (toGo / rate) * 3600 : 0;
      estimate.push(last, { x: last.x + seconds, y: c.estimated_total_usd });
    }
    chart("chart-cost", {
      type: "line",
      data: { datasets: [
        { label: "cost so far", data: series, borderColor: "#3b82f6", backgroundColor: "#3b82f633", fill: true, pointRadius: 0 },
        { label: "estimate to finish", data: estimate, borderColor: "#ea580c", borderDash: [6, 4], pointRadius: 2 },
      ] },
      options: { scales: { x: { type: "linear", title: { display: true, text: "s" } }, y: { beginAtZero: true } } },
    });
  }

  function timeline(s, d) {
    const t0 = d.started_at || 0;
    const rows = d.timeline || [];
    const now = (d.now || t0) - t0;
    const labels = rows.map((r) => r.job_key.split("-").slice(-1)[0] + " (" + r.task_count + ")");
    const sets = {};
    const causes = {};
    const add = (kind, colour, row, a, b) => {
      if (!sets[kind]) sets[kind] = { label: kind, data: [], backgroundColor: colour, borderSkipped: false, grouped: false, barPercentage: 0.8 };
      sets[kind].data.push({ y: labels[row], x: [a, Math.max(b, a + 0.2)] });
    };
    rows.forEach((r, i) => {
      const start = r.submitted_at - t0;
      const first = (r.first_task_at || r.ended_at || d.now) - t0;
      add("startup", COLOURS.startup, i, start, first);
      for (const task of r.tasks) {
        const a = (task.start || task.end) - t0;
        const b = (task.end == null ? d.now : task.end) - t0;
        const kind = task.code ? "retry: " + task.code : task.outcome;
        add(kind, COLOURS[task.outcome] || COLOURS.error, i, a, b);
      }
      if (r.failure_code) {
        if (!(r.failure_code in causes)) causes[r.failure_code] = CAUSE_COLOURS[Object.keys(causes).length % CAUSE_COLOURS.length];
        const end = (r.ended_at || d.now) - t0;
        add("job failed: " + r.failure_code, causes[r.failure_code], i, end - Math.max(1, now / 150), end);
      }
    });
    $("timeline-box").style.height = Math.max(160, 40 + rows.length * 18) + "px";
    chart("chart-timeline", {
      type: "bar",
      data: { labels, datasets: Object.values(sets) },
      options: { indexAxis: "y", scales: { x: { type: "linear", min: 0, title: { display: true, text: "s since start" } }, y: { stacked: true, ticks: { autoSkip: false } } },
        plugins: { legend: { position: "bottom" } } },
    });
  }

  function nodes(s) {
    const m = s.metrics;
    const body = $("nodes-table").tBodies[0];
    body.innerHTML = "";
    if (!m) {
      $("metrics-note").textContent = "node metrics are off for this run";
      chart("chart-nodes", { type: "line", data: { datasets: [] } });
      return;
    }
    $("metrics-note").textContent = `Azure Monitor: ${m.requests} request(s), one every ${m.interval_s}s (${m.requests_per_minute_budget}/min), grain ${m.grain_s}s`;
    const t0 = (s.dashboard || {}).started_at || 0;
    const sets = [];
    m.nodes.forEach((n, i) => {
      const row = body.insertRow();
      const l = n.latest || {};
      for (const v of [n.node_id.slice(0, 14) + "…", n.run_id || "", l.cpu, l.memory, l.disk]) row.insertCell().textContent = v == null ? "" : String(v);
      sets.push({ label: n.node_id.slice(0, 10) + " cpu", data: (n.series.cpu || []).map(([t, v]) => ({ x: t - t0, y: v })),
        borderColor: CAUSE_COLOURS[i % CAUSE_COLOURS.length], pointRadius: 2 });
    });
    chart("chart-nodes", { type: "line", data: { datasets: sets },
      options: { scales: { x: { type: "linear", title: { display: true, text: "s" } }, y: { min: 0, max: 100 } } } });
  }

  function alerts(s) {
    const a = s.alerts || { active: [], history: [] };
    $("alerts-active-count").textContent = String(a.active.length);
    const body = $("alerts-table").tBodies[0];
    body.innerHTML = "";
    for (const al of [...a.history].reverse()) {
      const row = body.insertRow();
      row.className = al.priority + (al.cleared_at ? " cleared" : "");
      row.dataset.rule = al.rule;
      for (const v of [al.priority, al.rule, al.subject, time(al.raised_at), time(al.cleared_at), al.message]) row.insertCell().textContent = v || "";
    }
  }

  function render(s) {
    const d = s.dashboard || {};
    counts(s);
    progress(s, d);
    cost(s, d);
    timeline(s, d);
    nodes(s);
    alerts(s);
    document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
  }

  async function refresh() {
    try {
      const response = await fetch("status.json", { cache: "no-store" });
      if (response.ok) render(await response.json());
    } catch (e) {
      $("updated").textContent = "the run is not answering (" + e + ")";
    }
  }

  const embedded = document.getElementById("dashboard-data");
  if (embedded) {
    $("mode").textContent = "final report";
    render(JSON.parse(embedded.textContent));
  } else {
    $("mode").textContent = "live";
    refresh();
    setInterval(refresh, 2000);
  }
})();
