// gridsync office dashboard: plain JS over the office API. Everything from
// the server is put into the page as text (never as HTML): case content is
// written by residents and workers.
"use strict";

const $ = (sel) => document.querySelector(sel);
const STATUS = {
  draft: "草稿", reported: "已上报", accepted: "已受理", rejected: "不予受理",
  dispatched: "已派单", signed_for: "已签收", in_progress: "办理中",
  handled: "已办结待回访", closed: "已结案", returned: "已退单", reopened: "已重启",
};
const RATES = [
  ["response", "响应率"], ["on_time_completion", "按期办结率"],
  ["resolution", "问题解决率"], ["satisfaction", "满意率"],
];

let token = sessionStorage.getItem("gridsync-token") || "";

async function api(path, options = {}) {
  const res = await fetch(path, {
    ...options,
    headers: { "Authorization": `Bearer ${token}`, "Content-Type": "application/json" },
  });
  const body = await res.json().catch(() => null);
  if (!res.ok) {
    const err = new Error((body && body.message) || res.statusText);
    err.status = res.status;
    throw err;
  }
  return body;
}

function el(tag, text, attrs = {}) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function row(cells, onClick) {
  const tr = el("tr");
  for (const c of cells) tr.append(el("td", c));
  if (onClick) tr.addEventListener("click", onClick);
  return tr;
}

function ago(ms) {
  const h = Math.floor(ms / 3600000);
  return h >= 48 ? `${Math.floor(h / 24)} 天` : `${h} 小时`;
}

function when(ms) {
  return ms ? new Date(ms).toLocaleString("zh-CN", { hour12: false }) : "从未";
}

function pct(rate) {
  return rate && rate.rate !== null ? `${(rate.rate * 100).toFixed(1)}%` : "—";
}

// ------------------------------------------------------------ login

async function login(t) {
  token = t;
  try {
    const me = await api("/v1/office/me");
    sessionStorage.setItem("gridsync-token", t);
    $("#who-name").textContent = `${me.user}（${me.role}）`;
    $("#who").hidden = false;
    $("#login").hidden = true;
    $("#app").hidden = false;
    $("#login-error").textContent = "";
    await showTab("attention");
  } catch (e) {
    token = "";
    sessionStorage.removeItem("gridsync-token");
    $("#login-error").textContent = e.status === 401 ? "令牌无效" : `登录失败：${e.message}`;
  }
}

$("#login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  login($("#token").value.trim());
});

$("#logout").addEventListener("click", () => {
  sessionStorage.removeItem("gridsync-token");
  location.reload();
});

// ------------------------------------------------------------ tabs

async function showTab(name) {
  for (const b of document.querySelectorAll("nav button")) {
    b.classList.toggle("active", b.dataset.tab === name);
  }
  for (const s of document.querySelectorAll(".tab")) s.hidden = s.id !== `tab-${name}`;
  if (name === "attention") await loadAttention();
  if (name === "cases") await loadCases();
  if (name === "figures") await loadFigures();
  if (name === "devices") await loadDevices();
}

for (const b of document.querySelectorAll("nav button")) {
  b.addEventListener("click", () => showTab(b.dataset.tab));
}

// ------------------------------------------------------------ attention

async function loadAttention() {
  const [overdue, conflicts] = await Promise.all([
    api("/v1/office/issues?overdue=true&sort=deadline&limit=100"),
    api("/v1/office/issues?conflict=true&limit=100"),
  ]);
  const now = Date.now();
  const ob = $("#overdue tbody");
  ob.replaceChildren(...overdue.items.map((m) =>
    row([m.number, m.title, m.grid, STATUS[m.status] || m.status, ago(now - m.deadline)],
      () => openCase(m.id))));
  $("#overdue-count").textContent = shown(overdue);
  const cb = $("#conflicts tbody");
  cb.replaceChildren(...conflicts.items.map((m) =>
    row([m.number, m.title, m.grid, STATUS[m.status] || m.status, when(m.updated_at)],
      () => openCase(m.id))));
  $("#conflict-count").textContent = shown(conflicts);
}

// "共 N 件", and how many of them the list shows when not all.
function shown(page) {
  return page.total > page.items.length
    ? `共 ${page.total} 件（此处显示前 ${page.items.length} 件，全部见“案件查询”）`
    : `共 ${page.total} 件`;
}

// ------------------------------------------------------------ cases

const PAGE = 50;
const URGENCY = { red: "红", yellow: "黄", blue: "蓝" };
let casesOffset = 0;

for (const [value, label] of Object.entries(STATUS)) {
  $("#case-status").append(el("option", label, { value }));
}

function caseQuery() {
  const p = new URLSearchParams();
  const q = $("#case-q").value.trim();
  if (q) p.set("q", q);
  for (const [name, sel] of [["status", "#case-status"], ["urgency", "#case-urgency"], ["sort", "#case-sort"]]) {
    if ($(sel).value) p.set(name, $(sel).value);
  }
  if ($("#case-overdue").checked) p.set("overdue", "true");
  if ($("#case-supervised").checked) p.set("supervised", "true");
  p.set("offset", String(casesOffset));
  p.set("limit", String(PAGE));
  return p;
}

async function loadCases() {
  $("#case-error").textContent = "";
  let page;
  const query = caseQuery();
  try {
    page = await api(`/v1/office/issues?${query}`);
  } catch (e) {
    $("#case-error").textContent = e.message;
    return;
  }
  $("#cases tbody").replaceChildren(...page.items.map((m) =>
    row([m.number, m.title, m.grid, STATUS[m.status] || m.status, URGENCY[m.urgency] || "—",
      m.deadline ? when(m.deadline) : "—"], () => openCase(m.id))));
  const pages = Math.max(1, Math.ceil(page.total / PAGE));
  $("#cases-count").textContent = `共 ${page.total} 件`;
  $("#cases-page").textContent = `第 ${Math.floor(casesOffset / PAGE) + 1} / ${pages} 页`;
  $("#cases-prev").disabled = casesOffset === 0;
  $("#cases-next").disabled = casesOffset + PAGE >= page.total;
  // What the list shows (tests wait for it).
  $("#cases").dataset.query = String(query);
}

$("#case-search").addEventListener("submit", (ev) => {
  ev.preventDefault();
  casesOffset = 0;
  loadCases();
});
$("#cases-prev").addEventListener("click", () => {
  casesOffset = Math.max(0, casesOffset - PAGE);
  loadCases();
});
$("#cases-next").addEventListener("click", () => {
  casesOffset += PAGE;
  loadCases();
});

// ------------------------------------------------------------ a case

async function openCase(id) {
  const [v, tl] = await Promise.all([
    api(`/v1/office/issues/${id}`),
    api(`/v1/office/issues/${id}/timeline`),
  ]);
  $("#case").hidden = false;
  $("#case").dataset.id = id;
  $("#case-title").textContent = `${v.case_no} ${v.title}`;
  const facts = [
    ["状态", STATUS[v.status] || v.status],
    ["地点", `${v.location.community} / ${v.location.grid} ${v.location.address}`],
    ["类别", v.category],
    ["工单号", v.external_ref || "—"],
    ["期限", when(v.effective_deadline) + (v.overdue ? "（已逾期）" : "")],
    ["反映人", v.reporter ? `${v.reporter.name} ${v.reporter.phone}` : "（个人信息不可见）"],
  ];
  $("#case-facts").replaceChildren(...facts.flatMap(([k, val]) => [el("dt", k), el("dd", val)]));
  const conflict = v.status_conflict;
  const candidates = conflict ? conflict.candidates : [];
  $("#case-conflict").hidden = candidates.length < 2;
  $("#case-candidates").replaceChildren(...candidates.map((c) => {
    const b = el("button", `确认为「${STATUS[c.status] || c.status}」`, { type: "button", "data-status": c.status });
    b.addEventListener("click", () => resolve(id, c.status));
    return b;
  }));
  const unknown = v.unrecognized || [];
  $("#case-unrecognized").hidden = unknown.length === 0;
  $("#case-unrecognized-list").replaceChildren(...unknown.map((u) => el("li", `${u.field} = ${u.value}`)));
  showPhotos(v.attachments || []);
  $("#case-timeline").replaceChildren(...tl.items.map((item) => {
    const e = item.entry;
    let text;
    if (item.type === "status") {
      text = `${when(e.event.at)} ${e.event.by}：${STATUS[e.event.from] || e.event.from} → ${STATUS[e.event.to] || e.event.to}${e.applied ? "" : "（未生效）"}`;
    } else if (item.type === "return_visit") {
      text = `${when(e.at)} 回访：${e.reached ? "已联系" : "未联系上"}，${e.resolved ? "已解决" : "未解决"}`;
    } else if (item.type === "deadline_change") {
      text = `${when(e.at)} 期限改为 ${when(e.due)}：${e.reason}`;
    } else {
      text = `${when(e.at)} ${e.by || ""}：${e.text || e.caption || ""}`;
    }
    return el("li", text, { "data-type": item.type });
  }));
}

// Photos are fetched with the login's token and shown from memory (an
// <img> cannot send the token); the original opens in a new tab.
async function fileBlob(path) {
  const res = await fetch(path, { headers: { "Authorization": `Bearer ${token}` } });
  if (!res.ok) throw new Error(res.statusText);
  return res.blob();
}

function showPhotos(attachments) {
  $("#case-photos").replaceChildren(...attachments.map((a) => {
    const fig = el("figure", null, { "data-hash": a.file.hash });
    const caption = el("figcaption", `${a.file.caption || a.file.mime} · ${when(a.at)}`);
    fig.append(caption);
    const isImage = a.file.mime === "image/jpeg" || a.file.mime === "image/png";
    if (isImage) {
      fileBlob(`/v1/office/files/${a.file.hash}/thumbnail`)
        .then((b) => fig.prepend(el("img", null, { src: URL.createObjectURL(b), alt: a.file.caption || "照片" })))
        .catch(() => fig.prepend(el("span", "（照片尚未上传）")));
    }
    fig.addEventListener("click", () => {
      fileBlob(`/v1/office/files/${a.file.hash}`)
        .then((b) => window.open(URL.createObjectURL(b), "_blank", "noopener"))
        .catch(() => { caption.textContent = "文件尚未上传到服务器"; });
    });
    return fig;
  }));
}

$("#case-upload").addEventListener("change", async (ev) => {
  const file = ev.target.files[0];
  const id = $("#case").dataset.id;
  if (!file || !id) return;
  const res = await fetch(`/v1/office/issues/${id}/attachments?caption=${encodeURIComponent(file.name)}`, {
    method: "POST",
    headers: { "Authorization": `Bearer ${token}`, "Content-Type": file.type || "application/octet-stream" },
    body: file,
  });
  ev.target.value = "";
  if (res.ok) await openCase(id);
});

async function resolve(id, status) {
  await api(`/v1/office/issues/${id}/ops`, {
    method: "POST",
    body: JSON.stringify({ op: "resolve_status_conflict", args: { to: status, reason: "办公室核实" } }),
  });
  await openCase(id);
  await loadAttention();
}

$("#case-close").addEventListener("click", () => { $("#case").hidden = true; });

// ------------------------------------------------------------ figures

async function loadFigures() {
  const by = $("#group-by").value;
  const f = await api(`/v1/office/figures?by=${encodeURIComponent(by)}`);
  const t = f.total;
  const cards = [
    ["案件", t.issues], ["在办", t.open_issues], ["逾期", t.overdue],
    ["响应率", pct(t.response)], ["按期办结率", pct(t.on_time_completion)],
    ["问题解决率", pct(t.resolution)], ["满意率", pct(t.satisfaction)],
    ["重启率", pct(t.reopened)], ["重复投诉", t.repeat_complaints],
    ["议事会", t.meetings], ["议事后解决率", pct(t.council_resolution)],
    ["措施按期验收", pct(t.actions_verified_on_time)], ["待核冲突", t.open_conflicts],
    ["未同步设备", `${f.devices.not_synced} / ${f.devices.total}`],
  ];
  $("#figures-total").replaceChildren(...cards.map(([k, v]) => {
    const c = el("div", null, { class: "card" });
    c.append(el("span", k), el("b", v));
    return c;
  }));
  drawChart(f.rows);
  const head = el("tr");
  for (const h of ["分组", "案件", "在办", "逾期", ...RATES.map((r) => r[1]), "重复投诉", "议事会"]) head.append(el("th", h));
  $("#figures-table thead").replaceChildren(head);
  $("#figures-table tbody").replaceChildren(...f.rows.map((r) =>
    row([r.group || "（未填）", r.issues, r.open_issues, r.overdue, ...RATES.map(([k]) => pct(r[k])), r.repeat_complaints, r.meetings])));
}

$("#group-by").addEventListener("change", loadFigures);

const COLORS = ["#1565c0", "#2e7d32", "#b71c1c", "#ef6c00"];

// A grouped bar chart of the four rates per group, as SVG.
function drawChart(rows) {
  const ns = "http://www.w3.org/2000/svg";
  const groupW = 26 * RATES.length + 24;
  const width = Math.max(480, 60 + rows.length * groupW);
  const height = 260;
  const plot = 200;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("role", "img");
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
    return e;
  };
  for (const p of [0, 0.5, 1]) {
    const y = 20 + plot * (1 - p);
    add("line", { x1: 40, x2: width - 10, y1: y, y2: y, stroke: "#e0e6eb" });
    add("text", { x: 4, y: y + 4, "font-size": 11, fill: "#607d8b" }, `${p * 100}%`);
  }
  rows.forEach((r, i) => {
    const x0 = 50 + i * groupW;
    RATES.forEach(([k], j) => {
      const rate = r[k] && r[k].rate !== null ? r[k].rate : 0;
      const h = Math.max(1, plot * rate);
      add("rect", { x: x0 + j * 26, y: 20 + plot - h, width: 22, height: h, fill: COLORS[j], "data-rate": k });
    });
    add("text", { x: x0, y: height - 22, "font-size": 11 }, r.group || "（未填）");
  });
  RATES.forEach(([, name], j) => {
    add("rect", { x: 50 + j * 110, y: height - 12, width: 10, height: 10, fill: COLORS[j] });
    add("text", { x: 64 + j * 110, y: height - 3, "font-size": 11 }, name);
  });
  $("#figures-chart").replaceChildren(svg);
}

// ------------------------------------------------------------ devices

async function loadDevices() {
  const d = await api("/v1/office/devices");
  const stale = d.items.filter((x) => x.stale).length;
  $("#devices-stale").textContent = `未同步 ${stale} 台 / 共 ${d.items.length} 台`;
  $("#devices tbody").replaceChildren(...d.items.map((x) => {
    const tr = row([x.id, x.worker, x.code, when(x.last_sync_at), x.revoked ? "已吊销" : x.stale ? "超过 24 小时未同步" : "正常"]);
    if (x.stale) tr.classList.add("stale");
    return tr;
  }));
}

if (token) login(token);
