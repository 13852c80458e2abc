// The console's pages: each renders the JSON API of audit/console.py.
"use strict";
const $ = (id) => document.getElementById(id);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const pct = (v) => (v === null || v === undefined) ? "-" : (100 * v).toFixed(1) + "%";
const num = (v, d = 0) => (v === null || v === undefined) ? "-" : Number(v).toFixed(d);
const ms = (v) => (v === null || v === undefined) ? "-" : Number(v).toFixed(0) + " ms";
const time = (v) => v ? new Date(v).toISOString().replace("T", " ").replace(".000Z", "Z") : "-";

async function getJson(url) {
  const r = await fetch(url);
  const body = await r.json();
  if (!r.ok) throw new Error(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
  return body;
}

function spark(svg, values, color = "#2f6fdb") {
  if (!svg) return;
  const pts = values.map((v) => (v === null || v === undefined) ? null : Number(v));
  const known = pts.filter((v) => v !== null);
  const max = Math.max(...known, 1e-9), w = 300, h = 40;
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const step = w / Math.max(pts.length - 1, 1);
  const path = pts.map((v, i) => v === null ? null : `${(i * step).toFixed(1)},${(h - 2 - (h - 4) * v / max).toFixed(1)}`)
    .filter((p) => p !== null).join(" ");
  svg.innerHTML = `<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${path}"/>`;
}

function tile(id, big, sub, values) {
  const el = $(id);
  el.querySelector(".big").textContent = big;
  el.querySelector(".sub").textContent = sub;
  spark(el.querySelector("svg"), values);
}

function accuracyTable(groups) {
  const rows = groups.map((g) => {
    const cell = (m) => m ? `${pct(m.review.precision)} / ${pct(m.review.recall)} / ${pct(m.review.fpr)}` : "-";
    const auc = (m) => m ? num(m.auc, 3) : "-";
    return `<tr><td>${g.model_version === null ? "-" : "v" + esc(g.model_version)}</td><td>${esc(g.path)}</td>
      <td>${g.n}</td><td>${g.fraud}</td><td>${cell(g.decision)}</td><td>${cell(g.rules_only)}</td><td>${cell(g.model_score)}</td>
      <td>${auc(g.decision)} / ${auc(g.rules_only)} / ${auc(g.model_score)}</td></tr>`;
  }).join("");
  return `<table><tr><th>model</th><th>path</th><th>events</th><th>fraud</th>
    <th>decision P / R / FPR</th><th>rules only P / R / FPR</th><th>model score P / R / FPR</th><th>AUC decision / rules / model</th></tr>${rows}</table>`;
}

async function healthPage() {
  let h;
  try { h = await getJson("/api/health"); } catch (e) { $("results").innerHTML = `<p class="error">${esc(e.message)}</p>`; return; }
  const s = h.series, w = h.tile_window_min;
  tile("tile-latency", ms(h.latency_ms.p99), `p50 ${ms(h.latency_ms.p50)}, p99.9 ${ms(h.latency_ms.p999)}; commit visible p99 ${ms(h.visibility_ms.p99)} (last ${w} min)`,
       s.map((m) => m.latency_ms ? m.latency_ms.p99 : null));
  const windows = Object.keys(h.accuracy.windows).sort((a, b) => a - b);
  const first = windows.length ? h.accuracy.windows[windows[0]] : null;
  const all = first ? first.groups.find((g) => g.path === "ALL") : null;
  let trend = [];
  try { trend = (await getJson("/api/accuracy/all")).series.map((p) => p.decision_recall); } catch (e) { trend = []; }
  tile("tile-accuracy", all && all.n ? `P ${pct(all.decision.review.precision)} R ${pct(all.decision.review.recall)}` : "no mature labels yet",
       all ? `rules only: P ${pct(all.rules_only.review.precision)} R ${pct(all.rules_only.review.recall)}; ${all.n} labelled events, last ${windows[0]} mature min` : "",
       trend);
  tile("tile-fallback", pct(h.fallback.rate), `${h.traffic.decisions} decisions in the last ${w} min`, s.map((m) => m.fallback_rate ?? null));
  const c = h.completeness;
  tile("tile-completeness", c ? pct(c.share_complete) : "-", c ? `${c.decisions} decisions, ${c.decisions_without_trace} without trace, ${c.traces_without_decision} traces without decision` : "", s.map((m) => m.completeness ?? null));
  $("traffic").textContent = `${num(h.traffic.per_minute, 1)} decisions/min; paths ${JSON.stringify(h.traffic.paths)}`;
  spark($("spark-traffic"), s.map((m) => m.decisions));
  const causes = Object.entries(h.fallback.causes);
  $("causes").innerHTML = "<tr><th>fallback cause</th><th>decisions</th></tr>" + (causes.length ? causes.map(([k, v]) => `<tr><td>${esc(k)}</td><td>${v}</td></tr>`).join("") : "<tr><td>none</td><td>0</td></tr>");
  $("freshness").innerHTML = "<tr><th>feature</th><th>p99</th></tr>" + Object.entries(h.freshness_p99_ms).map(([k, v]) => `<tr><td>${esc(k)}</td><td>${ms(v)}</td></tr>`).join("");
  $("drift").innerHTML = "<tr><th>model</th><th>scores</th><th>PSI</th></tr>" + h.drift.map((d) => `<tr><td><a href="/accuracy/${esc(d.model_version)}">v${esc(d.model_version)}</a></td><td>${d.scores}</td><td>${d.psi === null ? esc(d.reason) : num(d.psi, 3)}</td></tr>`).join("");
  $("accuracy").innerHTML = windows.map((k) => `<h3>last ${esc(k)} min of mature decisions (${h.accuracy.windows[k].labelled} labelled of ${h.accuracy.windows[k].decided_seen} seen)</h3>` + accuracyTable(h.accuracy.windows[k].groups)).join("")
    + `<p class="sub">maturity ${h.accuracy.maturity_ms / 1000} s; labels seen ${h.accuracy.labels_seen}, pending ${h.accuracy.labels_pending}, unmatched ${h.accuracy.labels_unmatched}. Threshold: review (flagged = REVIEW or DECLINE).</p>`;
}

function searchBox() {
  const form = $("search");
  if (!form) return;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const q = $("q").value.trim();
    if (!q) return;
    try {
      const r = await getJson("/api/search?q=" + encodeURIComponent(q));
      if (r.match === "decision") { location.href = "/decision/" + encodeURIComponent(r.decisions[0].decision_id); return; }
      $("results").innerHTML = r.decisions.length
        ? `<div class="panel"><h2>${r.decisions.length} decisions of ${esc(r.match)} ${esc(q)}</h2><table><tr><th>decided</th><th>event</th><th>outcome</th><th>path</th><th>score</th><th>amount</th></tr>` +
          r.decisions.map((d) => `<tr><td>${time(d.decided_at)}</td><td><a href="/decision/${esc(d.decision_id)}">${esc(d.event_id)}</a></td><td class="${esc(d.outcome)}">${esc(d.outcome)}</td><td>${esc(d.path)}</td><td>${num(d.score, 4)}</td><td>${esc(d.amount)} ${esc(d.currency)}</td></tr>`).join("") + "</table></div>"
        : `<p class="error">nothing found for ${esc(q)}; the store has read up to ${esc(JSON.stringify(r.store.offsets))} (last decided ${time(r.store.last_decided_at)})</p>`;
    } catch (e) { $("results").innerHTML = `<p class="error">${esc(e.message)}</p>`; }
  });
}

async function decisionPage() {
  const id = decodeURIComponent(location.pathname.split("/").pop());
  let d;
  try { d = await getJson("/api/decision/" + encodeURIComponent(id)); } catch (e) { $("decision").innerHTML = `<p class="error">${esc(e.message)}</p>`; return; }
  const r = d.row, m = d.model, ev = r.event;
  const model = m.score !== null && m.fallback_reason === null
    ? `model ${esc(m.name)} v${esc(m.model_version)}: score <b>${num(m.score, 4)}</b>, ${num(m.latency_ms, 1)} ms, batch of ${esc(m.batch_size)}`
    : m.last_score ? `live call failed (<b>${esc(m.fallback_reason)}</b>: ${esc(m.fallback_detail)}); used the card's last score ${num(m.score, 4)} from v${esc(m.model_version)} (event ${esc(m.last_score.event_id)})`
    : `no model score: fallback <b>${esc(m.fallback_reason)}</b> (${esc(m.fallback_detail)}); the rules alone decided`;
  $("decision").innerHTML = `
  <div class="panel"><h2>Decision <span id="outcome" class="${esc(r.outcome)}">${esc(r.outcome)}</span> via ${esc(r.path)}${r.late ? " (late event)" : ""}</h2>
   <table><tr><td>decision id</td><td id="decision-id">${esc(r.decision_id)}</td></tr><tr><td>event id</td><td id="event-id">${esc(r.event_id)}</td></tr>
   <tr><td>decided at</td><td>${time(r.decided_at)}</td></tr><tr><td>reasons</td><td>${esc(r.reasons.join(", ") || "none (approved)")}</td></tr>
   <tr><td>model</td><td id="model">${model}</td></tr>
   <tr><td>thresholds</td><td>DECLINE &gt;= ${esc(d.thresholds.decline)}, REVIEW &gt;= ${esc(d.thresholds.review)}</td></tr></table></div>
  <div class="panels">
  <div class="panel"><h2>Input event</h2><table>${Object.entries(ev).map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(v)}</td></tr>`).join("")}
   <tr><td>read from</td><td>${esc(d.input_topic)}[${esc(d.input_partition)}]@${esc(d.input_offset)}</td></tr></table></div>
  <div class="panel"><h2>Rules (${esc(r.rules_version)})</h2><table><tr><th>rule</th><th>when</th><th>inputs</th><th>fired</th></tr>${d.rules.map((x) => `<tr><td>${esc(x.id)}</td><td>${esc(x.when)}</td><td>${esc(JSON.stringify(x.inputs))}</td><td class="${x.fired ? "fired" : ""}">${x.fired ? "fired: " + esc(x.outcome) : "no"}</td></tr>`).join("")}</table></div>
  <div class="panel"><h2>Stage timings (ms)</h2><table>${Object.entries(d.stage_ms).map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(v)}</td></tr>`).join("")}</table>
   <p class="sub">job ${esc(d.job.name)} code ${esc(d.job.code_version)} config ${esc(d.job.config_digest)}</p></div>
  </div>
  <div class="panel" style="margin-top:12px"><h2>Features</h2><table id="features"><tr><th>feature</th><th>value</th><th>view</th><th>window</th><th>as of event time</th><th>freshness</th></tr>
   ${d.features.map((f) => `<tr><td>${esc(f.name)}</td><td>${esc(f.value)}</td><td>${esc(f.view)}</td><td>${f.window_ms === null ? "-" : esc(f.window_ms / 1000) + " s"}</td><td>${time(f.as_of_event_time)}</td><td>${ms(f.freshness_ms)}</td></tr>`).join("")}</table></div>`;
}

async function accuracyPage() {
  const version = decodeURIComponent(location.pathname.split("/").pop());
  let a;
  try { a = await getJson("/api/accuracy/" + encodeURIComponent(version)); } catch (e) { $("accuracy").innerHTML = `<p class="error">${esc(e.message)}</p>`; return; }
  $("versions").innerHTML = "model versions: " + ["all", ...a.versions].map((v) => `<a href="/accuracy/${esc(v)}">${esc(v === "all" ? "all events" : "v" + v)}</a>`).join(" | ");
  $("accuracy").innerHTML = `<h2>${version === "all" ? "all events" : "model v" + esc(version)}</h2>` + Object.entries(a.windows).map(([k, w]) => `<h3>last ${esc(k)} mature minutes</h3>` + accuracyTable(w.groups)).join("");
  const s = a.series;
  const lines = [["decision_precision", "#2f6fdb"], ["decision_recall", "#1e7a36"], ["rules_only_precision", "#9aa7c7"], ["rules_only_recall", "#a35c00"]];
  const w = 600, h = 200, step = w / Math.max(s.length - 1, 1);
  $("chart").innerHTML = lines.map(([key, color]) => `<polyline fill="none" stroke="${color}" stroke-width="2" points="${s.map((p, i) => p[key] === null ? null : `${(i * step).toFixed(1)},${(h - 10 - (h - 20) * p[key]).toFixed(1)}`).filter((x) => x).join(" ")}"><title>${key}</title></polyline>`).join("")
    + lines.map(([key, color], i) => `<text x="${10 + i * 150}" y="12" fill="${color}" font-size="11">${key.replace("_", " ")}</text>`).join("");
  $("series").innerHTML = "<tr><th>minute</th><th>events</th><th>fraud</th><th>decision P / R</th><th>rules only P / R</th><th>model score P / R</th></tr>" +
    s.map((p) => `<tr><td>${time(p.minute)}</td><td>${p.n}</td><td>${p.fraud}</td><td>${pct(p.decision_precision)} / ${pct(p.decision_recall)}</td><td>${pct(p.rules_only_precision)} / ${pct(p.rules_only_recall)}</td><td>${pct(p.model_score_precision)} / ${pct(p.model_score_recall)}</td></tr>`).join("");
}

const pages = {health: healthPage, decision: decisionPage, accuracy: accuracyPage};
const page = location.pathname.startsWith("/decision/") ? "decision"
  : location.pathname.startsWith("/accuracy/") ? "accuracy" : "health";
$("page").appendChild($("page-" + page).content.cloneNode(true));
searchBox();
pages[page]();
if (page === "health") setInterval(healthPage, 3000);
