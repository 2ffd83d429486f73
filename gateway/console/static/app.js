// fengkong risk officers' console: plain JavaScript, no framework, no build step.
//
// The token lives in sessionStorage (this tab only) and goes out only in the Authorization
// header; the live view is read from GET /v1/events with fetch() and a stream reader, since
// EventSource cannot send that header. Every value is written as text (textContent), never as
// HTML. Roles: a viewer gets no action buttons at all; risk and admin get them, and the server
// decides what each role may really do (403) and what change control needs (409).
"use strict";

const TOKEN_KEY = "fengkong.console.token";
const LANG_KEY = "fengkong.console.lang";

const I18N = {
  en: {
    login_title: "Risk officers' console", token: "Operator token", login: "Log in",
    logout: "Log out", token_note: "The token is kept for this tab only and sent only in the Authorization header.",
    dashboard: "Dashboard", audit: "Audit", kills: "Kill switch", accounts: "Accounts",
    sessions: "Sessions", alerts: "Alerts", back: "Back", positions: "Positions",
    working_orders: "Working orders", counters: "Daily counters and limits", limits: "Limits",
    limit: "Limit", new_value: "New value", change_limit: "Change limit",
    audit_title: "Admin actions (from the journal)", older: "Older", cancel: "Cancel",
    confirm: "Confirm", reason_required: "Reason (required)",
    emergency: "Emergency (change control, security rules art. 15)",
    scope: "Scope", key: "Key", close_only: "close-only", kill: "Kill", reset: "Reset",
    scope_firm: "firm", scope_account: "account", scope_group: "account group",
    scope_session: "session", scope_instrument: "instrument", scope_product: "product",
    account: "Account", status: "Status", kill_state: "Kill", balance: "Balance",
    available: "Available", used_margin: "Used margin", frozen: "Frozen", pnl: "P&L",
    open_orders: "Open orders", loss: "Loss", messages: "Messages/product",
    cancels: "Cancels/contract", large_cancels: "Large cancels", self_trades: "Self-trades",
    open_volume: "Open volume", session: "Session", front: "Front", user: "User", rate: "Msgs/s",
    msgs: "Messages", time: "Time", level: "Level", code: "Code", text: "Text",
    exchange_link: "Exchange link", journal: "Journal", kafka: "Kafka outbox",
    trading_session: "Trading session", halted: "New orders", working: "Working orders",
    cancels_pending: "Cancels held", stats: "Orders / rejects / fills",
    open: "open", closed: "closed", none: "none", no_kills: "No scope is killed.",
    not_journaled: "no journal", writable: "writable", failing: "FAILING", safe_mode: "SAFE MODE",
    not_configured: "not configured", lag: "lag", accepting: "accepted", refused: "REFUSED",
    symbol: "Contract", long_td: "Long today", long_yd: "Long yd", short_td: "Short today",
    short_yd: "Short yd", frozen_pos: "Frozen (L td/yd, S td/yd)", pending: "Pending (L/S)",
    margin: "Margin", unrealised: "Unrealised", cl_ord_id: "Client id", side: "Side",
    price: "Price", qty: "Qty", filled: "Filled", leaves: "Leaves", order_status: "Status",
    used: "Used", max: "Limit", value: "Value", no_limit: "no limit",
    kill_account: "Kill account", close_only_account: "Close-only kill", reset_account: "Reset kill",
    set_status: "Set status", operator: "Operator", action: "Action", reason: "Reason",
    emergency_col: "Emergency", args: "Details", live: "live", reconnecting: "reconnecting…",
    confirm_kill: "Kill {scope} {key}: new orders are refused and its working orders cancelled.",
    confirm_close_only: "Close-only kill of {scope} {key}: opening orders are refused and working opening orders cancelled.",
    confirm_reset: "Reset the kill switch of {scope} {key}: new orders are accepted again.",
    confirm_status: "Set account {key} {status}.",
    confirm_limit: "Change {name} of account {key} from {old} to {new}.",
    cc_needed: "A trading session is open: this change loosens risk control and needs the emergency flag and a reason (change control). Server: {error}",
    done: "Done: {what}", failed: "Refused ({status}): {error}", cancels_sent: "{n} cancels sent",
    source_journal: "Read from the journal, newest first.",
    source_memory: "No journal configured: this process's actions since it started, newest first.",
    yes: "yes", no: "no", buy: "BUY", sell: "SELL", account_title: "Account {id}",
  },
  zh: {
    login_title: "风控人员控制台", token: "操作员令牌", login: "登录", logout: "退出",
    token_note: "令牌只保存在本标签页，只通过 Authorization 头发送。",
    dashboard: "总览", audit: "审计", kills: "紧急止损（熔断）", accounts: "账户", sessions: "会话",
    alerts: "告警", back: "返回", positions: "持仓", working_orders: "挂单",
    counters: "当日计数与阈值", limits: "限额", limit: "限额项", new_value: "新值",
    change_limit: "修改限额", audit_title: "管理操作（来自审计日志）", older: "更早",
    cancel: "取消", confirm: "确认", reason_required: "原因（必填）",
    emergency: "紧急变更（变更管理，安全办法第十五条）",
    scope: "范围", key: "对象", close_only: "只平仓", kill: "熔断", reset: "解除",
    scope_firm: "全公司", scope_account: "账户", scope_group: "账户组", scope_session: "会话",
    scope_instrument: "合约", scope_product: "品种",
    account: "账户", status: "状态", kill_state: "熔断", balance: "权益", available: "可用资金",
    used_margin: "占用保证金", frozen: "冻结", pnl: "盈亏", open_orders: "挂单数", loss: "亏损",
    messages: "信息量/品种", cancels: "撤单/合约", large_cancels: "大额撤单", self_trades: "自成交",
    open_volume: "开仓量", session: "会话", front: "接入", user: "用户", rate: "消息/秒", msgs: "消息数",
    time: "时间", level: "级别", code: "代码", text: "内容", exchange_link: "交易所连接",
    journal: "审计日志", kafka: "Kafka 发件箱", trading_session: "交易时段", halted: "新订单",
    working: "挂单", cancels_pending: "待发撤单", stats: "订单 / 拒单 / 成交",
    open: "开市", closed: "休市", none: "无", no_kills: "没有熔断的范围。",
    not_journaled: "未配置日志", writable: "可写", failing: "写入失败", safe_mode: "安全模式",
    not_configured: "未配置", lag: "滞后", accepting: "接受", refused: "拒绝",
    symbol: "合约", long_td: "多头今仓", long_yd: "多头昨仓", short_td: "空头今仓",
    short_yd: "空头昨仓", frozen_pos: "冻结（多今/昨，空今/昨）", pending: "待成交（多/空）",
    margin: "保证金", unrealised: "浮动盈亏", cl_ord_id: "客户委托号", side: "方向",
    price: "价格", qty: "数量", filled: "成交", leaves: "剩余", order_status: "状态",
    used: "已用", max: "上限", value: "值", no_limit: "不限",
    kill_account: "熔断账户", close_only_account: "只平仓熔断", reset_account: "解除熔断",
    set_status: "设置状态", operator: "操作员", action: "操作", reason: "原因",
    emergency_col: "紧急", args: "详情", live: "实时", reconnecting: "重新连接中…",
    confirm_kill: "熔断{scope} {key}：拒绝新订单，撤销全部挂单。",
    confirm_close_only: "只平仓熔断{scope} {key}：拒绝开仓订单，撤销开仓挂单。",
    confirm_reset: "解除{scope} {key}的熔断：重新接受新订单。",
    confirm_status: "将账户 {key} 设置为 {status}。",
    confirm_limit: "将账户 {key} 的 {name} 从 {old} 改为 {new}。",
    cc_needed: "交易时段内：此变更放宽风控，须勾选紧急变更并填写原因（变更管理）。服务器：{error}",
    done: "完成：{what}", failed: "被拒绝（{status}）：{error}", cancels_sent: "已发送 {n} 笔撤单",
    source_journal: "读取自审计日志，最新在前。",
    source_memory: "未配置审计日志：本进程启动以来的操作，最新在前。",
    yes: "是", no: "否", buy: "买", sell: "卖", account_title: "账户 {id}",
  },
};

const LIMIT_COLUMNS = ["open_orders", "loss", "messages", "cancels", "large_cancels",
                       "self_trades", "open_volume"];
const ACTION_ROLES = { risk: 2, admin: 3 };

const S = {
  token: null, operator: null, role: null, lang: "en",
  sections: { firm: null, accounts: [], sessions: [] }, alerts: [],
  account: null, detail: null, usage: null, detailBusy: false, detailAgain: false,
  streamCtl: null, backoff: 1000, auditBefore: null,
};

const $ = (sel) => document.querySelector(sel);

function t(key, vars) {
  let s = (I18N[S.lang] && I18N[S.lang][key]) || I18N.en[key] || key;
  if (vars) for (const [k, v] of Object.entries(vars)) s = s.split("{" + k + "}").join(String(v));
  return s;
}

function canAct() { return (ACTION_ROLES[S.role] || 0) >= 2; }

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    else if (k === "data") for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = dv;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function pad(n, w = 2) { return String(Math.abs(n)).padStart(w, "0"); }

// Local time in ISO 8601 with the UTC offset, e.g. 2026-12-01T13:05:02.123+08:00.
function isoLocal(ns) {
  const d = new Date(Math.floor(ns / 1e6));
  const off = -d.getTimezoneOffset();
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:` +
    `${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}` +
    `${off >= 0 ? "+" : "-"}${pad(Math.trunc(off / 60))}:${pad(off % 60)}`;
}

const money = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
function yuan(v) { return v === null || v === undefined ? "" : money.format(v); }

function toast(text, bad) {
  const box = $("#toast");
  box.textContent = text;
  box.className = bad ? "bad" : "";
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 6000);
}

// ------------------------------------------------------------------ HTTP
async function api(method, path, body) {
  const resp = await fetch(path, {
    method, cache: "no-store",
    headers: { "Authorization": "Bearer " + S.token, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await resp.json(); } catch (e) { data = { error: resp.statusText }; }
  if (resp.status === 401) { logout(); }
  return { status: resp.status, ok: resp.ok, data };
}

// ------------------------------------------------------------------ login
async function login(token) {
  S.token = token;
  const r = await api("GET", "/v1/whoami");
  if (!r.ok) {
    S.token = null;
    $("#login-error").textContent = r.data && r.data.error ? r.data.error : String(r.status);
    return false;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  S.operator = r.data.operator;
  S.role = r.data.role;
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#logout").hidden = false;
  $("#who").hidden = false;
  $("#who").textContent = `${S.operator} (${S.role})`;
  $("#gateway-id").textContent = r.data.gateway;
  document.body.dataset.role = S.role;
  // A viewer gets no action controls at all: removed, not merely hidden.
  if (canAct()) $("#scope-actions").hidden = false;
  else for (const e of document.querySelectorAll("#scope-actions, #limit-form")) e.remove();
  showTab("dashboard");
  openStream();
  return true;
}

function logout() {
  sessionStorage.removeItem(TOKEN_KEY);
  if (S.streamCtl) S.streamCtl.abort();
  location.reload();
}

// ------------------------------------------------------------------ live stream (SSE)
async function openStream() {
  const ctl = new AbortController();
  S.streamCtl = ctl;
  try {
    const resp = await fetch("/v1/events", {
      headers: { "Authorization": "Bearer " + S.token, "Accept": "text/event-stream" },
      cache: "no-store", signal: ctl.signal,
    });
    if (resp.status === 401) { logout(); return; }
    if (!resp.ok || !resp.body) throw new Error("HTTP " + resp.status);
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        onBlock(block);
      }
    }
  } catch (e) {
    if (ctl.signal.aborted) return;
  }
  // The stream ended (gateway restart, too slow, network): start again from a snapshot.
  $("#stream-state").textContent = t("reconnecting");
  setTimeout(openStream, S.backoff);
  S.backoff = Math.min(S.backoff * 2, 30000);
}

function onBlock(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    if (line.startsWith("event: ")) event = line.slice(7);
    else if (line.startsWith("data: ")) data.push(line.slice(6));
  }
  if (!data.length) return;
  const msg = JSON.parse(data.join("\n"));
  if (event === "snapshot") {
    S.backoff = 1000;
    S.alerts = [];
    $("#stream-state").textContent = "● " + t("live");
  }
  if (event === "snapshot" || event === "change") apply(msg, event === "snapshot");
}

function apply(msg, full) {
  let accountsChanged = false;
  for (const k of ["firm", "accounts", "sessions"]) {
    if (msg[k] !== undefined) { S.sections[k] = msg[k]; if (k === "accounts") accountsChanged = true; }
  }
  if (msg.alerts) {
    S.alerts = S.alerts.concat(msg.alerts).slice(-200);
  }
  if (full || msg.firm) renderFirm();
  if (full || msg.accounts) renderAccounts();
  if (full || msg.sessions) renderSessions();
  if (full || msg.alerts) renderAlerts();
  if (S.account && (accountsChanged || msg.firm)) refreshDetail();
}

// ------------------------------------------------------------------ dashboard
function card(label, value, cls, id) {
  return el("div", { class: "card", id }, el("div", { class: "label" }, label),
            el("div", { class: "value " + (cls || "") }, value));
}

function renderFirm() {
  const f = S.sections.firm;
  if (!f) return;
  const link = f.exchange_link;
  const badge = $("#link-badge");
  badge.hidden = false;
  badge.textContent = `${t("exchange_link")}: ${link}`;
  badge.className = "badge " + (link === "up" ? "ok" : "bad");
  let journal = t("not_journaled"), jcls = "muted";
  if (f.journal) {
    journal = f.journal.safe_mode ? t("safe_mode") : f.journal.writable ? t("writable") : t("failing");
    journal += ` · seq ${f.journal.next_seq} · fsync ${f.journal.fsync}`;
    jcls = f.journal.safe_mode || !f.journal.writable ? "level-limit" : "ok";
  }
  let kafka = t("not_configured"), kcls = "muted";
  if (f.kafka && f.kafka.running) {
    kafka = `${t("lag")} ${f.kafka.lag} · seq ${f.kafka.published_seq}` +
      (f.kafka.last_error ? ` · ${f.kafka.last_error}` : "");
    kcls = f.kafka.lag > 0 || f.kafka.last_error ? "level-warn" : "ok";
  } else if (f.kafka && f.kafka.configured) { kafka = "—"; }
  const halted = f.halted ? `${t("refused")}: ${f.halted.reason}` : t("accepting");
  const st = f.stats || {};
  const cards = $("#cards");
  cards.replaceChildren(
    card(t("exchange_link"), link, link === "up" ? "ok" : "level-limit", "card-link"),
    card(t("journal"), journal, jcls, "card-journal"),
    card(t("kafka"), kafka, kcls, "card-kafka"),
    card(t("trading_session"), f.session_open ? t("open") : t("closed"), "", "card-session"),
    card(t("halted"), halted, f.halted ? "level-limit" : "ok", "card-halted"),
    card(t("working"), f.working_orders, "", "card-working"),
    card(t("cancels_pending"), f.cancels_pending, f.cancels_pending ? "level-warn" : "", "card-held"),
    card(t("stats"), `${st.orders || 0} / ${st.rejected || 0} / ${st.fills || 0}`, "", "card-stats"),
  );
  const kills = $("#kills");
  if (!f.kills.length) kills.replaceChildren(el("li", { class: "muted" }, t("no_kills")));
  else kills.replaceChildren(...f.kills.map((k) => el("li", { class: "state-killed", data: { scope: k.scope, key: k.key } },
    `${t("scope_" + k.scope)} ${k.key} — ${k.mode === "close_only" ? t("close_only") : t("kill")}`,
    canAct() ? el("button", { type: "button", class: "action", data: { action: "reset-scope" },
      on: { click: () => resetScope(k.scope, k.key) } }, t("reset")) : null)));
}

function usageCell(u) {
  if (!u) return el("td", { class: "num muted" }, "");
  const max = u.max === null ? "∞" : u.max;
  return el("td", { class: "num level-" + u.level, title: u.scope || "" },
            `${u.limit === "loss" ? yuan(u.used) : u.used} / ${u.limit === "loss" && u.max !== null ? yuan(u.max) : max}`);
}

function renderAccounts() {
  const table = $("#accounts");
  table.tHead.replaceChildren(el("tr", null,
    ...["account", "status", "kill_state", "balance", "available", "used_margin", "frozen", "pnl"]
      .map((k) => el("th", { class: ["balance", "available", "used_margin", "frozen", "pnl"].includes(k) ? "num" : "" }, t(k))),
    ...LIMIT_COLUMNS.map((k) => el("th", { class: "num" }, t(k)))));
  table.tBodies[0].replaceChildren(...S.sections.accounts.map((a) => {
    const pnl = a.realised_pnl + a.unrealised_pnl;
    return el("tr", { class: "clickable", data: { account: a.account },
                      on: { click: () => openAccount(a.account) } },
      el("td", { class: "account" }, a.account),
      el("td", { class: "status status-" + a.status }, a.status),
      el("td", { class: "kill-state " + (a.killed ? "state-killed" : "muted") },
         a.killed ? (a.killed === "close_only" ? t("close_only") : t("kill")) : "—"),
      el("td", { class: "num" }, yuan(a.balance)),
      el("td", { class: "num" }, yuan(a.available)),
      el("td", { class: "num" }, yuan(a.used_margin)),
      el("td", { class: "num" }, yuan(a.frozen_margin + a.frozen_fee)),
      el("td", { class: "num " + (pnl < 0 ? "level-warn" : "") }, yuan(pnl)),
      ...LIMIT_COLUMNS.map((k) => {
        const c = usageCell(a.usage[k]);
        c.classList.add("u-" + k);
        return c;
      }));
  }));
}

function renderSessions() {
  const table = $("#sessions");
  table.tHead.replaceChildren(el("tr", null, ...["session", "front", "user", "accounts", "msgs", "rate", "working", "kill_state"]
    .map((k) => el("th", { class: ["msgs", "rate", "working"].includes(k) ? "num" : "" }, t(k)))));
  table.tBodies[0].replaceChildren(...S.sections.sessions.map((s) => el("tr", { data: { session: s.session } },
    el("td", null, s.session), el("td", { class: "front" }, s.front), el("td", null, s.user),
    el("td", null, s.accounts.join(" ")),
    el("td", { class: "num" }, s.messages),
    el("td", { class: "num rate" }, s.rate === null ? "—" : s.rate.toFixed(1)),
    el("td", { class: "num" }, s.working_orders),
    el("td", { class: s.killed ? "state-killed" : "muted" }, s.killed ? t("kill") : "—"))));
}

function renderAlerts() {
  const list = $("#alerts");
  list.replaceChildren(...S.alerts.slice().reverse().map((a) => el("li", { class: "alert", data: { level: a.level_name } },
    el("span", { class: "muted" }, isoLocal(a.ts_ns)), " ",
    el("span", { class: "lvl lvl-" + a.level_name }, a.level_name), " ",
    el("span", { class: "muted" }, `${a.code_name} (${a.code})`), " ",
    el("b", null, a.scope), " ", a.text)));
}

// ------------------------------------------------------------------ account drill-down
function openAccount(id) {
  S.account = id;
  S.detail = null;
  S.usage = null;
  showView("account-view");
  $("#account-title").textContent = t("account_title", { id });
  renderAccountActions();
  refreshDetail();
}

// Fetched again when the live view says the accounts changed: one request in flight at most.
async function refreshDetail() {
  if (S.detailBusy) { S.detailAgain = true; return; }
  S.detailBusy = true;
  try {
    do {
      S.detailAgain = false;
      const id = S.account;
      if (!id) break;
      const [a, u] = await Promise.all([api("GET", `/v1/accounts/${encodeURIComponent(id)}`),
                                        api("GET", `/v1/accounts/${encodeURIComponent(id)}/usage`)]);
      if (id !== S.account) continue;
      if (a.ok && u.ok) { S.detail = a.data; S.usage = u.data; renderDetail(); }
    } while (S.detailAgain);
  } finally { S.detailBusy = false; }
}

function renderAccountActions() {
  const box = $("#account-actions");
  box.replaceChildren();
  if (!canAct()) return;
  const id = S.account;
  box.append(
    el("button", { type: "button", class: "action danger", data: { action: "kill-account" },
                   on: { click: () => killScope("account", id, false) } }, t("kill_account")),
    el("button", { type: "button", class: "action", data: { action: "close-only-account" },
                   on: { click: () => killScope("account", id, true) } }, t("close_only_account")),
    el("button", { type: "button", class: "action", data: { action: "reset-account" },
                   on: { click: () => resetScope("account", id) } }, t("reset_account")),
    el("select", { id: "status-select", class: "action" },
       ...["ACTIVE", "CLOSE_ONLY", "SUSPENDED"].map((s) => el("option", { value: s }, s))),
    el("button", { type: "button", class: "action", data: { action: "set-status" },
                   on: { click: () => setStatus(id, $("#status-select").value) } }, t("set_status")));
}

function table(sel, heads, rows) {
  const tb = $(sel);
  tb.tHead.replaceChildren(el("tr", null, ...heads.map(([k, num]) => el("th", { class: num ? "num" : "" }, t(k)))));
  tb.tBodies[0].replaceChildren(...rows);
}

function renderDetail() {
  const a = S.detail, u = S.usage;
  const row = S.sections.accounts.find((x) => x.account === a.account);
  $("#account-summary").replaceChildren(
    card(t("status"), a.status, "status-" + a.status, "detail-status"),
    card(t("kill_state"), row && row.killed ? (row.killed === "close_only" ? t("close_only") : t("kill")) : "—",
         row && row.killed ? "state-killed" : "muted", "detail-kill"),
    card(t("balance"), yuan(a.balance)), card(t("available"), yuan(a.available)),
    card(t("used_margin"), yuan(a.used_margin)),
    card(t("frozen"), yuan(a.frozen_margin + a.frozen_fee)),
    card(t("pnl"), yuan(a.realised_pnl + a.unrealised_pnl)),
    card(t("open_orders"), a.open_orders, "", "detail-open-orders"));
  table("#positions", [["symbol"], ["long_td", 1], ["long_yd", 1], ["short_td", 1], ["short_yd", 1],
                       ["frozen_pos", 1], ["pending", 1], ["margin", 1], ["unrealised", 1]],
    u.positions.map((p) => el("tr", { data: { symbol: p.symbol } }, el("td", null, p.symbol),
      el("td", { class: "num" }, p.long_td), el("td", { class: "num" }, p.long_yd),
      el("td", { class: "num" }, p.short_td), el("td", { class: "num" }, p.short_yd),
      el("td", { class: "num" }, `${p.long_td_frozen}/${p.long_yd_frozen}, ${p.short_td_frozen}/${p.short_yd_frozen}`),
      el("td", { class: "num" }, `${p.long_pending}/${p.short_pending}`),
      el("td", { class: "num" }, yuan(p.long_margin + p.short_margin)),
      el("td", { class: "num" }, yuan(p.unrealised)))));
  table("#orders", [["cl_ord_id"], ["symbol"], ["side"], ["price", 1], ["qty", 1], ["filled", 1],
                    ["leaves", 1], ["order_status"], ["time"]],
    a.orders.map((o) => el("tr", { class: "order", data: { clOrdId: o.cl_ord_id } },
      el("td", null, o.cl_ord_id), el("td", null, o.symbol),
      el("td", null, o.side === 1 ? t("buy") : t("sell")), el("td", { class: "num" }, o.price),
      el("td", { class: "num" }, o.qty), el("td", { class: "num" }, o.cum),
      el("td", { class: "num" }, o.leaves), el("td", null, o.status), el("td", null, isoLocal(o.ts_ns)))));
  table("#counters", [["limit"], ["scope"], ["used", 1], ["max", 1]],
    u.usage.map((x) => el("tr", { class: "level-" + x.level, data: { limit: x.limit } },
      el("td", null, t(x.limit)), el("td", null, x.scope),
      el("td", { class: "num" }, x.limit === "loss" ? yuan(x.used) : x.used),
      el("td", { class: "num" }, x.max === null ? t("no_limit") : x.max))));
  const limits = Object.entries(a.limits);
  table("#limits", [["limit"], ["value", 1]], limits.map(([k, v]) => el("tr", { data: { limit: k } },
    el("td", null, k), el("td", { class: "num" }, v === null ? t("no_limit") : String(v)))));
  const form = $("#limit-form");
  if (form && canAct()) {
    form.hidden = false;
    const sel = $("#limit-name");
    if (sel.options.length !== limits.length) {
      sel.replaceChildren(...limits.map(([k]) => el("option", { value: k }, k)));
    }
  }
}

// ------------------------------------------------------------------ actions
// A modal with a mandatory reason; with ``emergency`` it also asks for the change-control flag
// (and will not confirm without it). Resolves to {reason, emergency} or null.
function ask(title, text, opts) {
  opts = opts || {};
  const dlg = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-cc").hidden = !opts.cc;
  $("#confirm-cc").textContent = opts.cc || "";
  $("#confirm-error").textContent = "";
  const reason = $("#confirm-reason");
  reason.value = opts.reason || "";
  const em = $("#confirm-emergency");
  em.checked = false;
  $("#confirm-emergency-label").hidden = !opts.emergency;
  const ok = $("#confirm-ok");
  const valid = () => { ok.disabled = !reason.value.trim() || (opts.emergency && !em.checked); };
  valid();
  reason.oninput = valid;
  em.onchange = valid;
  return new Promise((resolve) => {
    const done = (value) => { dlg.close(); resolve(value); };
    ok.onclick = () => { if (!ok.disabled) done({ reason: reason.value.trim(), emergency: !!(opts.emergency && em.checked) }); };
    $("#confirm-cancel").onclick = () => done(null);
    dlg.oncancel = (e) => { e.preventDefault(); done(null); };
    dlg.showModal();
    reason.focus();
  });
}

function report(r, what) {
  if (r.ok) {
    const extra = r.data && r.data.cancels_sent !== undefined ? ` (${t("cancels_sent", { n: r.data.cancels_sent })})` : "";
    toast(t("done", { what }) + extra);
  } else {
    toast(t("failed", { status: r.status, error: r.data && r.data.error }), true);
  }
  return r.ok;
}

async function killScope(scope, key, closeOnly) {
  const text = t(closeOnly ? "confirm_close_only" : "confirm_kill", { scope: t("scope_" + scope), key });
  const answer = await ask(t(closeOnly ? "close_only_account" : "kill"), text);
  if (!answer) return;
  const r = await api("POST", "/v1/kill", { scope, key, reason: answer.reason, close_only: closeOnly });
  report(r, `${t("kill")} ${scope} ${key}`);
}

async function resetScope(scope, key) {
  const answer = await ask(t("reset"), t("confirm_reset", { scope: t("scope_" + scope), key }));
  if (!answer) return;
  const r = await api("POST", "/v1/reset", { scope, key, reason: answer.reason });
  report(r, `${t("reset")} ${scope} ${key}`);
}

// A change under change control: sent as asked; when the server answers 409 (a loosening while
// a trading session is open) the operator is asked for the emergency flag and a reason, and it
// is sent again with them. The server decides what is a loosening, never the page.
async function controlled(title, text, path, body) {
  let answer = await ask(title, text);
  if (!answer) return;
  let r = await api("POST", path, { ...body, reason: answer.reason, emergency: false });
  if (r.status === 409) {
    answer = await ask(title, text, { emergency: true, reason: answer.reason,
                                     cc: t("cc_needed", { error: r.data.error }) });
    if (!answer) return;
    r = await api("POST", path, { ...body, reason: answer.reason, emergency: true });
  }
  report(r, title);
  if (r.ok) refreshDetail();
}

function setStatus(id, status) {
  return controlled(t("set_status"), t("confirm_status", { key: id, status }),
                    `/v1/accounts/${encodeURIComponent(id)}/status`, { status });
}

function parseLimit(text) {
  const s = text.trim();
  if (s === "" || s.toLowerCase() === "none" || s === "不限") return null;
  if (s === "true") return true;
  if (s === "false") return false;
  const n = Number(s);
  if (!Number.isFinite(n)) throw new Error(`not a number: ${s}`);
  return n;
}

function changeLimit() {
  const id = S.account, name = $("#limit-name").value;
  let value;
  try { value = parseLimit($("#limit-value").value); } catch (e) { toast(e.message, true); return; }
  const old = S.detail ? S.detail.limits[name] : "";
  return controlled(t("change_limit"), t("confirm_limit", { key: id, name, old: old === null ? t("no_limit") : old,
                                                          new: value === null ? t("no_limit") : value }),
                    `/v1/accounts/${encodeURIComponent(id)}/limits`, { limits: { [name]: value } });
}

// ------------------------------------------------------------------ audit view
async function loadAudit(more) {
  const before = more ? S.auditBefore : null;
  const q = before === null ? "" : `&before=${before}`;
  const r = await api("GET", `/v1/audit?limit=50${q}`);
  if (!r.ok) { toast(t("failed", { status: r.status, error: r.data.error }), true); return; }
  const d = r.data;
  $("#audit-source").textContent = t(d.source === "journal" ? "source_journal" : "source_memory") +
    (d.damage ? ` ${d.damage}` : "");
  const tb = $("#audit-table");
  tb.tHead.replaceChildren(el("tr", null, ...["time", "operator", "action", "scope", "key", "reason", "emergency_col", "args"]
    .map((k) => el("th", null, t(k)))));
  const rows = d.entries.map((e) => el("tr", { class: "audit-row", data: { action: e.action } },
    el("td", null, isoLocal(e.ts_ns)), el("td", null, e.operator), el("td", null, e.action),
    el("td", null, e.scope), el("td", null, e.key), el("td", null, e.reason),
    el("td", { class: e.emergency ? "level-warn" : "" }, e.emergency ? t("yes") : t("no")),
    el("td", { class: "muted" }, Object.keys(e.args || {}).length ? JSON.stringify(e.args) : "")));
  if (more) tb.tBodies[0].append(...rows); else tb.tBodies[0].replaceChildren(...rows);
  S.auditBefore = d.next_before;
  $("#audit-more").hidden = d.next_before === null;
}

// ------------------------------------------------------------------ navigation and language
function showView(id) {
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== id;
}

function showTab(name) {
  for (const b of document.querySelectorAll("nav .tab")) b.classList.toggle("active", b.dataset.tab === name);
  if (name === "audit") { S.account = null; showView("audit"); loadAudit(false); }
  else { S.account = null; showView("dashboard"); }
}

function setLang(lang) {
  S.lang = lang;
  localStorage.setItem(LANG_KEY, lang);
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  for (const e of document.querySelectorAll("[data-i18n]")) e.textContent = t(e.dataset.i18n);
  $("#lang-toggle").textContent = lang === "zh" ? "English" : "中文";
  renderFirm();
  if (S.sections.firm) { renderAccounts(); renderSessions(); renderAlerts(); }
  if (S.account && S.detail) { renderAccountActions(); renderDetail(); }
  if (!$("#audit").hidden) loadAudit(false);
}

document.addEventListener("DOMContentLoaded", () => {
  const saved = localStorage.getItem(LANG_KEY);
  setLang(saved || ((navigator.language || "").toLowerCase().startsWith("zh") ? "zh" : "en"));
  $("#lang-toggle").addEventListener("click", () => setLang(S.lang === "zh" ? "en" : "zh"));
  $("#logout").addEventListener("click", logout);
  $("#login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("#login-token").value.trim();
    $("#login-token").value = "";
    if (token) login(token);
  });
  for (const b of document.querySelectorAll("nav .tab")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("#back").addEventListener("click", () => showTab("dashboard"));
  $("#audit-more").addEventListener("click", () => loadAudit(true));
  $("#limit-apply").addEventListener("click", changeLimit);
  $("#scope-kill").addEventListener("click", () =>
    killScope($("#scope-kind").value, $("#scope-key").value.trim(), $("#scope-close-only").checked));
  $("#scope-reset").addEventListener("click", () => resetScope($("#scope-kind").value, $("#scope-key").value.trim()));
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) login(token);
});
