// gridsync office dashboard: plain JS over the office API. Everything from
// the server is put into the page as text (never as HTML): case content is
// written by residents and workers.
"use strict";

const $ = (sel) => document.querySelector(sel);
// The Chinese names of codes (core's labels), the places in the user's
// scope with their names, and who the user is: loaded at login.
let L = {};
let PLACES = [];
let ME = null;
const STATUS = new Proxy({}, { get: (_, code) => (L.status || {})[code] });
const label = (table, code) => (code === null || code === undefined || code === "")
  ? "—" : ((L[table] || {})[code] || code);

function placeName(street, community, grid) {
  const p = PLACES.find((x) => x.community === community && x.grid === (grid || ""));
  if (!p) return [community, grid].filter(Boolean).join(" / ");
  const c = p.community_name || p.community;
  return grid ? `${c} / ${p.grid_name || p.grid}` : c;
}
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
    [L, PLACES] = await Promise.all([api("/v1/office/labels"), api("/v1/office/places").then((p) => p.items)]);
    ME = me;
    fillChoices();
    sessionStorage.setItem("gridsync-token", t);
    $("#who-name").textContent = `${me.user}（${label("role", me.role)}）`;
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
  if (name === "meetings") await loadMeetings();
  if (name === "board") await loadBoard();
  if (name === "figures") await loadFigures();
  if (name === "devices") await loadDevices();
}

for (const b of document.querySelectorAll("nav button")) {
  b.addEventListener("click", () => showTab(b.dataset.tab));
}

// ------------------------------------------------------------ attention

async function loadAttention() {
  const [overdue, dueSoon, conflicts] = await Promise.all([
    api("/v1/office/issues?overdue=true&sort=deadline&limit=100"),
    api("/v1/office/issues?due_soon=true&sort=deadline&limit=100"),
    api("/v1/office/issues?conflict=true&limit=100"),
  ]);
  $("#due-soon tbody").replaceChildren(...dueSoon.items.map((m) =>
    row([m.number, m.title, placeName(m.street, m.community, m.grid), STATUS[m.status] || m.status, when(m.deadline)],
      () => openCase(m.id))));
  $("#due-soon-count").textContent = shown(dueSoon);
  const now = Date.now();
  const ob = $("#overdue tbody");
  ob.replaceChildren(...overdue.items.map((m) =>
    row([m.number, m.title, placeName(m.street, m.community, m.grid), STATUS[m.status] || m.status, ago(now - m.deadline)],
      () => openCase(m.id))));
  $("#overdue-count").textContent = shown(overdue);
  const cb = $("#conflicts tbody");
  cb.replaceChildren(...conflicts.items.map((m) =>
    row([m.number, m.title, placeName(m.street, m.community, m.grid), STATUS[m.status] || m.status, when(m.updated_at)],
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

// Options from the label tables and the user's places (after login).
function options(sel, table, keepFirst = true) {
  const first = keepFirst ? [...$(sel).options].slice(0, 1) : [];
  $(sel).replaceChildren(...first, ...Object.entries(L[table] || {}).map(([value, name]) => el("option", name, { value })));
}

function placeOptions(sel, withCommunities) {
  const first = [...$(sel).options].filter((o) => o.value === "").slice(0, 1);
  $(sel).replaceChildren(...first, ...PLACES.filter((p) => withCommunities || p.grid).map((p) =>
    el("option", placeName(p.street, p.community, p.grid), { value: JSON.stringify([p.street, p.community, p.grid]) })));
}

function fillChoices() {
  options("#case-status", "status");
  options("#case-kind", "kind");
  options("#case-category", "category");
  options("#case-source", "source");
  placeOptions("#case-place", false);
  options("#cv-level", "meeting_level", false);
  options("#cv-format", "meeting_format", false);
  placeOptions("#cv-place", true);
  options("#rv-satisfaction", "satisfaction");
  options("#act-resolution", "resolution");
  options("#at-role", "attendee_role", false);
  options("#mt-outcome", "meeting_outcome");
}

function caseQuery() {
  const p = new URLSearchParams();
  const q = $("#case-q").value.trim();
  if (q) p.set("q", q);
  for (const [name, sel] of [["status", "#case-status"], ["urgency", "#case-urgency"], ["sort", "#case-sort"]]) {
    if ($(sel).value) p.set(name, $(sel).value);
  }
  for (const [name, sel] of [["kind", "#case-kind"], ["category", "#case-category"], ["source", "#case-source"]]) {
    if ($(sel).value) p.set(name, $(sel).value);
  }
  for (const [name, sel] of [["assignee", "#case-assignee"], ["lead_unit", "#case-lead"]]) {
    if ($(sel).value.trim()) p.set(name, $(sel).value.trim());
  }
  // Whole days, local time.
  if ($("#case-from").value) p.set("created_from", String(new Date(`${$("#case-from").value}T00:00:00`).getTime()));
  if ($("#case-to").value) p.set("created_to", String(new Date(`${$("#case-to").value}T00:00:00`).getTime() + 86400000));
  if ($("#case-place").value) {
    const [street, community, grid] = JSON.parse($("#case-place").value);
    p.set("street", street);
    p.set("community", community);
    p.set("grid", grid);
  }
  if ($("#case-overdue").checked) p.set("overdue", "true");
  if ($("#case-supervised").checked) p.set("supervised", "true");
  if ($("#case-extension").checked) p.set("extension_requested", "true");
  if ($("#case-conflicted").checked) p.set("conflict", "true");
  if ($("#case-after-close").checked) p.set("activity_after_close", "true");
  p.set("offset", String(casesOffset));
  p.set("limit", String(PAGE));
  return p;
}

let casesAsked = 0;

async function loadCases() {
  $("#case-error").textContent = "";
  let page;
  const query = caseQuery();
  const asked = ++casesAsked;
  try {
    page = await api(`/v1/office/issues?${query}`);
  } catch (e) {
    $("#case-error").textContent = e.message;
    return;
  }
  // A slower answer to an earlier search does not overwrite a later one.
  if (asked !== casesAsked) return;
  $("#cases tbody").replaceChildren(...page.items.map((m) =>
    row([m.number, m.title, placeName(m.street, m.community, m.grid), STATUS[m.status] || m.status, URGENCY[m.urgency] || "—",
      m.deadline ? when(m.deadline) : "—"], () => openCase(m.id))));
  const pages = Math.max(1, Math.ceil(page.total / PAGE));
  $("#cases-count").textContent = `共 ${page.total} 件`;
  $("#cases-page").textContent = `第 ${Math.floor(casesOffset / PAGE) + 1} / ${pages} 页`;
  $("#cases-prev").disabled = casesOffset === 0;
  $("#cases-next").disabled = casesOffset + PAGE >= page.total;
  // What the list shows (tests wait for it).
  $("#cases").dataset.query = String(query);
}

// Downloads an export with the login's token (a link cannot send it):
// fetched, then saved from memory under the server's file name.
async function download(path, errorSel) {
  $(errorSel).textContent = "";
  const res = await fetch(path, { headers: { "Authorization": `Bearer ${token}` } });
  if (!res.ok) {
    const body = await res.json().catch(() => null);
    $(errorSel).textContent = (body && body.message) || res.statusText;
    return;
  }
  const name = (res.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/);
  const a = el("a", null, { href: URL.createObjectURL(await res.blob()), download: name ? name[1] : "export" });
  document.body.append(a);
  a.click();
  a.remove();
}

// The case list's filters, without paging, for an export.
function exportQuery() {
  const p = caseQuery();
  p.delete("offset");
  p.delete("limit");
  return p;
}

$("#cases-csv").addEventListener("click", () => download(`/v1/office/exports/issues.csv?${exportQuery()}`, "#case-error"));
$("#cases-xlsx").addEventListener("click", () => download(`/v1/office/exports/issues.xlsx?${exportQuery()}`, "#case-error"));
$("#fig-csv").addEventListener("click", () =>
  download(`/v1/office/exports/figures.csv?by=${encodeURIComponent($("#group-by").value)}&${figureRange()}`, "#fig-error"));
$("#fig-xlsx").addEventListener("click", () =>
  download(`/v1/office/exports/figures.xlsx?by=${encodeURIComponent($("#group-by").value)}&${figureRange()}`, "#fig-error"));

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

// Button words for moving a case to each status.
const MOVE = {
  reported: "上报", accepted: "受理", rejected: "不予受理", dispatched: "派单",
  signed_for: "签收", in_progress: "开始办理", handled: "办结", closed: "结案",
  returned: "退单", reopened: "重启", draft: "退回草稿",
};
// Register conflicts the office settles by writing the register again.
const REGISTER_OPS = {
  title: "set_title", category: "set_category", urgency: "set_urgency", kind: "set_kind",
  assignee: "set_assignee", lead_unit: "set_lead_unit", reply_to_citizen: "set_reply_to_citizen",
};
const REGISTER_NAMES = {
  title: "标题", category: "类别", urgency: "紧急程度", kind: "类型", assignee: "承办人",
  lead_unit: "牵头单位", reply_to_citizen: "答复市民", resolution: "办理结果",
  resolution_summary: "办理情况", reporter_name: "反映人姓名", reporter_phone: "反映人电话",
  address: "地址", building: "楼栋", reporter_anonymous: "匿名", reporter_callback: "可回访",
  geo_lat: "纬度", geo_lon: "经度", geo_acc: "定位精度",
};
const REGISTER_TABLES = { urgency: "urgency", kind: "kind", category: "category", resolution: "resolution" };

let current = null;

function localInput(ms) {
  const d = new Date(ms - new Date().getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

async function caseOp(id, op, args) {
  $("#act-error").textContent = "";
  try {
    await api(`/v1/office/issues/${id}/ops`, { method: "POST", body: JSON.stringify({ op, args }) });
  } catch (e) {
    $("#act-error").textContent = e.message;
    return false;
  }
  await openCase(id);
  return true;
}

async function openCase(id) {
  const [v, tl] = await Promise.all([
    api(`/v1/office/issues/${id}`),
    api(`/v1/office/issues/${id}/timeline`),
  ]);
  current = v;
  // How many cases the panel has shown (tests wait for the next one).
  $("#case").dataset.opened = String(Number($("#case").dataset.opened || 0) + 1);
  $("#meeting").hidden = true;
  $("#case").hidden = false;
  $("#case").dataset.id = id;
  $("#case-title").textContent = `${v.case_no} ${v.title}`;
  const flags = [];
  if (v.overdue) flags.push("已逾期");
  if (v.due_soon) flags.push("即将超期");
  if (v.supervised) flags.push("督办");
  if (v.extension_requested) flags.push("申请延期待批");
  if ((v.activity_after_close || []).length) flags.push("结案后有新动态");
  if (v.status_conflict || (v.register_conflicts || []).length) flags.push("有冲突待核");
  $("#case-flags").replaceChildren(...flags.map((f) => el("span", f)));
  const loc = v.location;
  const visit = (v.return_visits || []).slice(-1)[0];
  const facts = [
    ["状态", label("status", v.status)],
    ["地点", `${placeName(loc.street, loc.community, loc.grid)} ${loc.address} ${loc.building}`.trim()],
    ["类别", label("category", v.category)],
    ["工单号", v.external_ref || "—"],
    ["期限", when(v.effective_deadline) + (v.overdue ? "（已逾期）" : "")],
    ["反映人", v.reporter ? `${v.reporter.name} ${v.reporter.phone}` : "（个人信息不可见）"],
    ["类型", label("kind", v.kind)],
    ["紧急程度", label("urgency", v.urgency)],
    ["来源渠道", label("source", v.source)],
    ["承办人", v.assignee || "—"],
    ["牵头单位", v.lead_unit || "—"],
    ["协办单位", (v.assist_units || []).join("、") || "—"],
    ["问题描述", v.description || "—"],
    ["原始诉求", v.original_statement || "—"],
    ["办理结果", v.resolution ? `${label("resolution", v.resolution)} ${v.resolution_summary}` : (v.resolution_summary || "—")],
    ["答复市民", v.reply_to_citizen || "—"],
    ["最近回访", visit ? `${visit.reached ? "已联系" : "未联系上"}，${visit.resolved ? "已解决" : "未解决"}，${label("satisfaction", visit.satisfaction)}` : "—"],
    ["登记", `${when(v.created_at)} ${v.created_by}`],
  ];
  $("#case-facts").replaceChildren(...facts.flatMap(([k, val]) => [el("dt", k), el("dd", val, { class: "pre" })]));
  const conflict = v.status_conflict;
  const candidates = conflict ? conflict.candidates : [];
  $("#case-conflict").hidden = candidates.length < 2;
  $("#case-candidates").replaceChildren(...candidates.map((c) => {
    const b = el("button", `确认为「${label("status", c.status)}」`, { type: "button", "data-status": c.status });
    b.addEventListener("click", () => resolve(id, c.status));
    return b;
  }));
  showRegisters(id, v.register_conflicts || [], v);
  showActions(id, v);
  const unknown = v.unrecognized || [];
  $("#case-unrecognized").hidden = unknown.length === 0;
  $("#case-unrecognized-list").replaceChildren(...unknown.map((u) => el("li", `${u.field} = ${u.value}`)));
  showPhotos(v.attachments || []);
  $("#case-meetings").replaceChildren(...(v.meetings || []).map((mid) => {
    const li = el("li", "议事会", { "data-id": mid });
    api(`/v1/office/meetings/${mid}`).then((m) => { li.textContent = `${m.meeting_no} ${m.topic}`; }).catch(() => {});
    li.addEventListener("click", () => openMeeting(mid));
    return li;
  }));
  if (!(v.meetings || []).length) $("#case-meetings").append(el("li", "（无）"));
  $("#case-timeline").replaceChildren(...tl.items.map((item) => {
    const e = item.entry;
    let text;
    if (item.type === "status") {
      const ev = e.event;
      text = `${when(ev.at)} ${ev.by}（${label("role", ev.role)}）：${label("status", ev.from) === "—" ? "" : label("status", ev.from) + " → "}${label("status", ev.to)}${ev.reason ? `，理由：${ev.reason}` : ""}${e.applied ? "" : "（未生效）"}`;
    } else if (item.type === "return_visit") {
      text = `${when(e.at)} ${e.by} 回访：${e.reached ? "已联系" : "未联系上"}，${e.resolved ? "已解决" : "未解决"}，${label("satisfaction", e.satisfaction)}${e.note ? `，${e.note}` : ""}`;
    } else if (item.type === "deadline_change") {
      text = `${when(e.at)} ${e.by} ${e.answers ? "同意延期" : "调整期限"}至 ${when(e.due)}${e.reason ? `：${e.reason}` : ""}`;
    } else if (item.type === "timeline") {
      const asked = e.due ? `（申请延至 ${when(e.due)}）` : "";
      text = `${when(e.at)} ${e.by}（${label("role", e.role)}）【${label("timeline", e.kind)}】${e.text}${asked}`;
    } else {
      text = `${when(e.at)} ${e.by || ""}：附件 ${e.file ? (e.file.caption || e.file.mime) : ""}`;
    }
    const li = el("li", text, { "data-type": item.type });
    if (item.type === "timeline" && e.kind) li.dataset.kind = e.kind;
    return li;
  }));
}

// The operation that writes `value` into a conflicted register again
// (which settles it), given the case as it is; null when there is none
// (a hidden personal value, a position).
function settleOp(field, value, v) {
  if (REGISTER_OPS[field]) return [REGISTER_OPS[field], value];
  if (field === "resolution") return ["set_resolution", { resolution: value, summary: v.resolution_summary }];
  if (field === "resolution_summary") return ["set_resolution", { resolution: v.resolution, summary: value }];
  const reporter = { reporter_name: "name", reporter_phone: "phone", reporter_anonymous: "anonymous", reporter_callback: "may_call_back" }[field];
  if (reporter && v.reporter && value !== null) return ["set_reporter", { ...v.reporter, [reporter]: value }];
  if ((field === "address" || field === "building") && value !== null) return ["set_location", { ...v.location, [field]: value }];
  return null;
}

function showRegisters(id, conflicts, v) {
  $("#case-registers").hidden = conflicts.length === 0;
  $("#case-register-list").replaceChildren(...conflicts.map((c) => {
    const div = el("div", `${REGISTER_NAMES[c.field] || c.field}：`, { "data-field": c.field });
    let settled = false;
    for (const value of c.values) {
      const shown = REGISTER_TABLES[c.field] ? label(REGISTER_TABLES[c.field], value) : (value === null ? "（空）" : String(value));
      const op = settleOp(c.field, value, v);
      if (op) {
        const b = el("button", `采用「${shown}」`, { type: "button" });
        b.addEventListener("click", () => caseOp(id, op[0], op[1]));
        div.append(b);
        settled = true;
      } else {
        div.append(el("span", `「${shown}」 `));
      }
    }
    if (!settled) div.append(el("span", "（本账号无权查看或修改此项）"));
    return div;
  }));
}

function showActions(id, v) {
  const offers = v.offers || { transitions: [], actions: [] };
  const may = (a) => offers.actions.includes(a);
  $("#act-error").textContent = "";
  $("#act-transitions").replaceChildren(...offers.transitions.map((to) => {
    const b = el("button", MOVE[to] || label("status", to), { type: "button", "data-to": to });
    b.addEventListener("click", () => caseOp(id, "transition", { to, reason: $("#act-reason").value.trim() })
      .then((ok) => { if (ok) $("#act-reason").value = ""; }));
    return b;
  }));
  // Moving to a grid: the grids of the user's scope, this community's first.
  $("#act-move-row").hidden = !may("move");
  const grids = PLACES.filter((p) => p.grid && !(p.community === v.location.community && p.grid === v.location.grid));
  grids.sort((a, b) => (b.community === v.location.community) - (a.community === v.location.community));
  $("#act-grid").replaceChildren(...grids.map((p) =>
    el("option", placeName(p.street, p.community, p.grid), { value: JSON.stringify([p.street, p.community, p.grid]) })));
  $("#act-assign-row").hidden = !may("assign");
  $("#act-assignee").value = v.assignee || "";
  $("#act-lead-row").hidden = !may("assign");
  $("#act-lead").value = v.lead_unit || "";
  $("#act-result-row").hidden = !may("edit");
  $("#act-resolution").value = v.resolution || "";
  $("#act-summary").value = v.resolution_summary || "";
  $("#act-reply").value = v.reply_to_citizen || "";
  $("#act-supervise").hidden = !may("supervise");
  $("#act-visit-row").hidden = !may("record_return_visit");
  $("#act-deadline-row").hidden = !(may("extend_deadline") || may("request_extension"));
  $("#act-deadline").hidden = !may("extend_deadline");
  $("#act-request").hidden = !may("request_extension");
  $("#act-due").value = localInput((v.effective_deadline || Date.now()) + 72 * 3600000);
  // Pending extension requests: grant the date asked for, or refuse.
  const pending = (v.timeline || []).filter((t) => t.kind === "extension_request"
    && (v.pending_extensions || []).some((p) => p.dev === t.id.dev && p.n === t.id.n));
  $("#act-extension").hidden = !(pending.length && may("extend_deadline"));
  $("#act-extension").replaceChildren(...pending.flatMap((t) => {
    const grant = el("button", `同意延期至 ${when(t.due)}`, { type: "button", id: "act-grant" });
    grant.addEventListener("click", () => caseOp(id, "grant_extension", { request: t.id, due: t.due, reason: $("#act-reason").value.trim() }));
    const refuse = el("button", "不同意延期", { type: "button", id: "act-refuse" });
    refuse.addEventListener("click", () => caseOp(id, "refuse_extension", { request: t.id, reason: $("#act-reason").value.trim() }));
    return [el("span", `${t.by} 申请延期：${t.text}`), grant, refuse];
  }));
}

const caseId = () => $("#case").dataset.id;
const reason = () => $("#act-reason").value.trim();
const dueInput = () => new Date($("#act-due").value).getTime();

$("#act-move").addEventListener("click", async () => {
  const [street, community, grid] = JSON.parse($("#act-grid").value);
  $("#act-error").textContent = "";
  try {
    await api(`/v1/office/issues/${caseId()}/move`, { method: "POST", body: JSON.stringify({ street, community, grid }) });
  } catch (e) {
    $("#act-error").textContent = e.message;
    return;
  }
  await openCase(caseId());
});
$("#act-assign").addEventListener("click", () =>
  caseOp(caseId(), "set_assignee", $("#act-assignee").value.trim() || null));
$("#act-lead-save").addEventListener("click", () =>
  caseOp(caseId(), "set_lead_unit", $("#act-lead").value.trim() || null));
$("#act-resolution-save").addEventListener("click", () => caseOp(caseId(), "set_resolution", {
  resolution: $("#act-resolution").value || null, summary: $("#act-summary").value.trim(),
}));
$("#act-reply-save").addEventListener("click", () =>
  caseOp(caseId(), "set_reply_to_citizen", $("#act-reply").value.trim()));
$("#act-supervise").addEventListener("click", () => {
  if (!reason()) { $("#act-error").textContent = "请填写督办要求"; return; }
  caseOp(caseId(), "add_timeline", { kind: "supervision", text: reason() }).then((ok) => { if (ok) $("#act-reason").value = ""; });
});
$("#act-note").addEventListener("click", () => {
  if (!reason()) { $("#act-error").textContent = "请填写记录内容"; return; }
  caseOp(caseId(), "add_timeline", { kind: "note", text: reason() }).then((ok) => { if (ok) $("#act-reason").value = ""; });
});
$("#act-deadline").addEventListener("click", () =>
  caseOp(caseId(), "change_deadline", { due: dueInput(), reason: reason() }));
$("#act-request").addEventListener("click", () =>
  caseOp(caseId(), "request_extension", { due: dueInput(), reason: reason() }));
$("#act-visit").addEventListener("click", () => caseOp(caseId(), "add_return_visit", {
  reached: $("#rv-reached").checked, resolved: $("#rv-resolved").checked,
  satisfaction: $("#rv-satisfaction").value || null, note: reason(),
}));

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
  await caseOp(id, "resolve_status_conflict", { to: status, reason: "办公室核实" });
  await loadAttention();
}

$("#case-close").addEventListener("click", () => { $("#case").hidden = true; });

// ------------------------------------------------------------ meetings

async function loadMeetings() {
  const page = await api("/v1/office/meetings?limit=100");
  $("#meetings tbody").replaceChildren(...page.items.map((m) =>
    row([m.number, m.title, placeName(m.street, m.community, m.grid), label("meeting_status", m.status), m.deadline ? when(m.deadline) : "—"],
      () => openMeeting(m.id))));
  $("#meetings-count").textContent = shown(page).replace("件", "次").replace("件", "次");
}

$("#convene-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#cv-error").textContent = "";
  const [street, community, grid] = JSON.parse($("#cv-place").value || "[\"\",\"\",\"\"]");
  try {
    // Cases are named by their numbers, as a clerk has them.
    const numbers = $("#cv-cases").value.split(/[,，\s]+/).filter(Boolean);
    const ids = [];
    for (const n of numbers) ids.push((await api(`/v1/office/issues/${encodeURIComponent(n)}`)).id);
    const at = $("#cv-when").value;
    const m = await api("/v1/office/meetings", {
      method: "POST",
      body: JSON.stringify({
        topic: $("#cv-topic").value.trim(), level: $("#cv-level").value, format: $("#cv-format").value,
        venue: $("#cv-venue").value.trim(), group_ref: $("#cv-group").value.trim(),
        convener: $("#cv-convener").value.trim() || ME.user,
        scheduled_at: at ? new Date(at).getTime() : null,
        location: { street, community, grid, building: "", address: "" },
        agenda: $("#cv-agenda").value, issue_ids: ids,
      }),
    });
    $("#convene-form").reset();
    await loadMeetings();
    await openMeeting(m.id);
  } catch (e) {
    $("#cv-error").textContent = e.message;
  }
});

// Action item moves the office makes, by status.
const ITEM_MOVES = {
  proposed: [["agreed", "议定"]],
  agreed: [["in_progress", "开始落实"]],
  reopened: [["in_progress", "重新落实"]],
  in_progress: [["done", "报完成"]],
  done: [["verified", "验收通过"], ["reopened", "验收不通过"]],
};

async function meetingOp(id, op, args) {
  $("#meeting-error").textContent = "";
  try {
    await api(`/v1/office/meetings/${id}/ops`, { method: "POST", body: JSON.stringify({ op, args }) });
  } catch (e) {
    $("#meeting-error").textContent = e.message;
    return false;
  }
  await openMeeting(id);
  return true;
}

async function openMeeting(id) {
  const m = await api(`/v1/office/meetings/${id}`);
  $("#case").hidden = true;
  $("#meeting").hidden = false;
  $("#meeting").dataset.id = id;
  $("#meeting-error").textContent = "";
  $("#meeting-title").textContent = `${m.meeting_no} ${m.topic}`;
  const loc = m.location;
  const facts = [
    ["层级", label("meeting_level", m.level)], ["形式", label("meeting_format", m.format)],
    ["会场", m.venue || "—"], ["线上群组", m.group_ref || "—"], ["召集人", m.convener || "—"],
    ["所属", placeName(loc.street, loc.community, loc.grid)],
    ["计划召开", m.scheduled_at ? when(m.scheduled_at) : "—"],
    ["实际召开", m.held_at ? when(m.held_at) : "未召开"],
    ["结果", label("meeting_outcome", m.outcome)],
  ];
  $("#meeting-facts").replaceChildren(...facts.flatMap(([k, val]) => [el("dt", k), el("dd", val)]));
  $("#meeting-cases").replaceChildren(...m.issue_ids.map((cid) => {
    const li = el("li", cid, { "data-id": cid });
    api(`/v1/office/issues/${cid}`).then((v) => { li.textContent = `${v.case_no} ${v.title}（${label("status", v.status)}）`; }).catch(() => {});
    li.addEventListener("click", () => openCase(cid));
    return li;
  }));
  $("#it-case").replaceChildren(el("option", "（不关联案件）", { value: "" }), ...m.issue_ids.map((cid) => el("option", cid, { value: cid })));
  for (const o of [...$("#it-case").options].slice(1)) {
    api(`/v1/office/issues/${o.value}`).then((v) => { o.textContent = v.case_no; }).catch(() => {});
  }
  $("#meeting-attendees").replaceChildren(...m.attendees.map((a) =>
    el("li", `${label("attendee_role", a.role)} ${a.organisation} ${a.name}${a.contact ? ` ${a.contact}` : ""}${a.online ? "（线上）" : ""}`)));
  $("#mt-agenda").value = m.agenda;
  $("#mt-minutes").value = m.minutes;
  $("#meeting-agreements").replaceChildren(...m.agreements.map((t) => el("li", `${t.text}（${t.by}）`)));
  $("#meeting-legal").replaceChildren(...m.legal_guidance.map((t) => el("li", `${t.text}（${t.by}）`)));
  $("#meeting-items tbody").replaceChildren(...m.action_items.map((item) => {
    const tr = el("tr", null, { "data-item": item.id, "data-status": item.status });
    const hint = item.overdue ? "（已逾期）" : item.awaiting_verification ? "（待验收）" : "";
    for (const c of [item.text, item.owner_party || "—", item.due ? when(item.due) : "—",
      label("action_status", item.status) + hint, `${item.evidence.length} 张`]) tr.append(el("td", c));
    if (item.overdue) tr.classList.add("overdue");
    const td = el("td");
    for (const [to, name] of ITEM_MOVES[item.status] || []) {
      const b = el("button", name, { type: "button", "data-to": to });
      b.addEventListener("click", () => moveItem(id, item.id, to));
      td.append(b);
    }
    tr.append(td);
    return tr;
  }));
}

// A random (version 4) UUID; crypto.randomUUID needs HTTPS, this does not.
function uuid() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

async function moveItem(meeting, item, to) {
  // Verifying takes the evidence photo chosen below, if any, first.
  const file = $("#it-evidence").files[0];
  if (to === "verified" && file) {
    const res = await fetch(`/v1/office/meetings/${meeting}/attachments?item=${item}&caption=${encodeURIComponent(file.name)}`, {
      method: "POST",
      headers: { "Authorization": `Bearer ${token}`, "Content-Type": file.type || "application/octet-stream" },
      body: file,
    });
    if (!res.ok) {
      $("#meeting-error").textContent = "佐证照片上传失败";
      return;
    }
    $("#it-evidence").value = "";
  }
  await meetingOp(meeting, "transition_action", { item, to, reason: "" });
}

const meetingId = () => $("#meeting").dataset.id;
$("#meeting-close").addEventListener("click", () => { $("#meeting").hidden = true; });
$("#mt-held").addEventListener("click", () => meetingOp(meetingId(), "set_held_at", Date.now()));
$("#mt-outcome-save").addEventListener("click", () => meetingOp(meetingId(), "set_outcome", $("#mt-outcome").value || null));
$("#mt-minutes-save").addEventListener("click", () => meetingOp(meetingId(), "edit_minutes", $("#mt-minutes").value));
$("#mt-agenda-save").addEventListener("click", () => meetingOp(meetingId(), "edit_agenda", $("#mt-agenda").value));
$("#mt-agreement-add").addEventListener("click", async () => {
  if ($("#mt-agreement").value.trim() && await meetingOp(meetingId(), "add_agreement", $("#mt-agreement").value.trim())) $("#mt-agreement").value = "";
});
$("#mt-legal-add").addEventListener("click", async () => {
  if ($("#mt-legal").value.trim() && await meetingOp(meetingId(), "add_legal_guidance", $("#mt-legal").value.trim())) $("#mt-legal").value = "";
});
$("#attendee-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const ok = await meetingOp(meetingId(), "add_attendee", {
    role: $("#at-role").value, organisation: $("#at-org").value.trim(), name: $("#at-name").value.trim(),
    contact: $("#at-contact").value.trim(), attended: true, online: $("#at-online").checked,
  });
  if (ok) $("#attendee-form").reset();
});
$("#item-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const due = $("#it-due").value;
  const ok = await meetingOp(meetingId(), "add_action_item", {
    item: uuid(),
    new: {
      text: $("#it-text").value.trim(), owner_party: $("#it-owner").value.trim(),
      issue_id: $("#it-case").value || null,
      // The end of the day chosen, local time.
      due: due ? new Date(`${due}T23:59:59`).getTime() : null,
    },
  });
  if (ok) $("#item-form").reset();
});

// ------------------------------------------------------------ action board

let boardAsked = 0;

async function loadBoard() {
  // Only the latest request's answer is shown (a slower earlier one, for
  // a filter since changed, is dropped).
  const asked = ++boardAsked;
  const filter = $("#board-filter").value;
  const page = await api(`/v1/office/action-items?limit=200&${filter}`);
  if (asked !== boardAsked) return;
  $("#board tbody").replaceChildren(...page.items.map((b) => {
    const tr = row([`${b.meeting_no} ${b.topic}`, b.item.text, b.item.owner_party || "—",
      b.item.due ? when(b.item.due) : "—", label("action_status", b.item.status),
      b.overdue ? "已逾期" : b.awaiting_verification ? "待验收" : ""], () => openMeeting(b.meeting));
    if (b.overdue) tr.classList.add("overdue");
    return tr;
  }));
  $("#board-count").textContent = `共 ${page.total} 项`;
  $("#board").dataset.query = filter;
}
$("#board-filter").addEventListener("change", loadBoard);

// ------------------------------------------------------------ figures

// The date range as query parameters: from the start of the first day
// to the end of the last, local time.
function figureRange() {
  const p = new URLSearchParams();
  const from = $("#fig-from").value;
  const to = $("#fig-to").value;
  if (from) p.set("from", String(new Date(`${from}T00:00:00`).getTime()));
  if (to) p.set("to", String(new Date(`${to}T00:00:00`).getTime() + 86400000));
  return p;
}

// A group's name: places, categories and channels by their names.
function groupName(by, group) {
  // Records of a community itself, not yet given to a grid.
  if (!group && by === "grid") return "（社区本级）";
  if (!group) return "（未填）";
  if (by === "category") return label("category", group);
  if (by === "channel") return label("source", group);
  if (by === "community") {
    const p = PLACES.find((x) => x.community === group);
    return (p && p.community_name) || group;
  }
  if (by === "grid") {
    const p = PLACES.find((x) => x.grid === group);
    return (p && p.grid_name) || group;
  }
  if (by === "street") {
    const p = PLACES.find((x) => x.street === group);
    return (p && p.street_name) || group;
  }
  return group;
}

// A rate with what it counts: "80.0%（8/10）".
function counted(rate) {
  return rate && rate.denominator ? `${pct(rate)}（${rate.numerator}/${rate.denominator}）` : "—";
}

async function loadFigures() {
  const by = $("#group-by").value;
  $("#fig-error").textContent = "";
  const range = figureRange();
  let f;
  let trend;
  try {
    [f, trend] = await Promise.all([
      api(`/v1/office/figures?by=${encodeURIComponent(by)}&${range}`),
      api(`/v1/office/figures?by=month&${range}`),
    ]);
  } catch (e) {
    $("#fig-error").textContent = e.message;
    return;
  }
  drawTrend(trend.rows);
  $("#figures-table").dataset.query = `${by}&${range}`;
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
  drawChart(f.rows.map((r) => ({ ...r, group: groupName(by, r.group) })));
  const head = el("tr");
  for (const h of ["分组", "案件", "在办", "逾期", ...RATES.map((r) => r[1]), "重复投诉", "议事会", "措施按期验收"]) head.append(el("th", h));
  $("#figures-table thead").replaceChildren(head);
  $("#figures-table tbody").replaceChildren(...f.rows.map((r) =>
    row([groupName(by, r.group), r.issues, r.open_issues, r.overdue, ...RATES.map(([k]) => counted(r[k])),
      r.repeat_complaints, r.meetings, counted(r.actions_verified_on_time)])));
}

$("#group-by").addEventListener("change", loadFigures);
$("#fig-apply").addEventListener("click", loadFigures);

// An empty SVG of the given size, and a function that adds an element to
// it (attributes, and text put in as text).
function svgCanvas(width, height) {
  const ns = "http://www.w3.org/2000/svg";
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
  return [svg, add];
}

// Cases per month as bars, and the on-time completion and satisfaction
// rates as lines over them, as SVG.
function drawTrend(rows) {
  const step = 64;
  const width = Math.max(480, 80 + rows.length * step);
  const height = 240;
  const plot = 160;
  const top = 20;
  const [svg, add] = svgCanvas(width, height);
  const most = Math.max(1, ...rows.map((r) => r.issues));
  add("text", { x: 4, y: 12, "font-size": 11, fill: "#607d8b" }, `案件数（最多 ${most}）`);
  rows.forEach((r, i) => {
    const x = 50 + i * step;
    const h = Math.max(1, plot * r.issues / most);
    add("rect", { x, y: top + plot - h, width: 30, height: h, fill: "#90a4ae", "data-month": r.group });
    add("text", { x, y: top + plot - h - 3, "font-size": 11 }, String(r.issues));
    add("text", { x: x - 6, y: height - 30, "font-size": 11 }, r.group);
  });
  [["on_time_completion", "#2e7d32", "按期办结率"], ["satisfaction", "#ef6c00", "满意率"]].forEach(([k, color, name], j) => {
    const points = rows.map((r, i) => [r[k], i]).filter(([rate]) => rate && rate.rate !== null)
      .map(([rate, i]) => `${65 + i * step},${top + plot * (1 - rate.rate)}`);
    if (points.length) add("polyline", { points: points.join(" "), fill: "none", stroke: color, "stroke-width": 2, "data-rate": k });
    add("rect", { x: 50 + j * 120, y: height - 12, width: 10, height: 10, fill: color });
    add("text", { x: 64 + j * 120, y: height - 3, "font-size": 11 }, name);
  });
  $("#figures-trend").replaceChildren(svg);
}

const COLORS = ["#1565c0", "#2e7d32", "#b71c1c", "#ef6c00"];

// A grouped bar chart of the four rates per group, as SVG.
function drawChart(rows) {
  const groupW = 26 * RATES.length + 24;
  const width = Math.max(480, 60 + rows.length * groupW);
  const height = 260;
  const plot = 200;
  const [svg, add] = svgCanvas(width, height);
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
    const state = x.state !== "active" ? label("device_state", x.state)
      : x.revoked ? "已吊销" : x.stale ? "超过 24 小时未同步" : label("device_state", x.state);
    const tr = row([x.id, x.worker, x.code, when(x.last_sync_at), when(x.last_contact_at), state]);
    if (x.stale) tr.classList.add("stale");
    return tr;
  }));
}

if (token) login(token);
