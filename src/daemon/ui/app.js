// canaryd dashboard (docs/dashboard.md). Plain browser JavaScript, no
// build step and no library: it reads and steers rollouts through the
// public API with the user's bearer token, which stays in this page's
// memory (or this tab's sessionStorage when asked) and is never a cookie.
// Everything the API sends is inserted as text (textContent), never as
// HTML. Charts are SVG drawn here.
"use strict";

(function () {
  const STORAGE_KEY = "canaryd.token";
  // Live stream reconnects: first wait, longest wait (ms).
  const RECONNECT_MIN_MS = 1000;
  const RECONNECT_MAX_MS = 15000;
  // Points a chart keeps while it grows live.
  const MAX_POINTS = 2000;
  // How often the lists are read again while shown (ms).
  const LIST_REFRESH_MS = 5000;
  // The newest rollouts the list reads (one server page): a daemon's whole
  // history, read every few seconds by every open tab, would hold the
  // store's lock that rollbacks commit under.
  const LIST_LIMIT = 200;

  const state = {
    token: sessionStorage.getItem(STORAGE_KEY) || "",
    me: null, // { actor, roles }
    page: null, // { stop(): void } for the page shown
  };

  // ---- small DOM helpers -------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      if (Array.isArray(c)) append(el, c);
      else if (c instanceof Node) el.appendChild(c);
      else el.appendChild(document.createTextNode(String(c)));
    }
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") el.setAttribute("class", v);
      else el.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c instanceof Node) el.appendChild(c);
      else if (c !== null && c !== undefined) el.appendChild(document.createTextNode(String(c)));
    }
    return el;
  }

  function notice(text, kind) {
    const n = document.getElementById("notice");
    n.textContent = text || "";
    n.className = kind || "";
  }

  // ---- numbers, units, times ----------------------------------------------

  function num(v) {
    if (typeof v !== "number" || !isFinite(v)) return null;
    if (v !== 0 && (Math.abs(v) >= 1e6 || Math.abs(v) < 1e-4)) return v.toExponential(3);
    return String(Number(v.toPrecision(4)));
  }

  // A value with its unit, as the contract's `unit` says to read it.
  function withUnit(v, unit) {
    const n = num(v);
    if (n === null) return "–";
    switch (unit) {
      case "× baseline": return "×" + n;
      case "%": return n + "%";
      case undefined: case null: case "": return n + " (unit not reported)";
      default: return n + " " + unit;
    }
  }

  function intervalText(iv, unit) {
    if (!Array.isArray(iv)) return "–";
    const [lo, hi] = iv;
    const u = (v) => withUnit(v, unit);
    if (lo === null && hi === null) return "–";
    if (hi === null || hi === undefined) return "≥ " + u(lo);
    if (lo === null || lo === undefined) return "≤ " + u(hi);
    return "[" + u(lo) + ", " + u(hi) + "]";
  }

  function when(t) {
    if (t === null || t === undefined || t === "") return "–";
    const d = typeof t === "number" ? new Date(t) : new Date(t);
    if (isNaN(d.getTime())) return String(t);
    const iso = d.toISOString().replace(/\.\d{3}Z$/, "Z");
    return iso + " (" + ago(d) + ")";
  }

  function ago(d) {
    const secs = Math.round((Date.now() - d.getTime()) / 1000);
    const a = Math.abs(secs);
    const txt = a < 60 ? a + "s" : a < 3600 ? Math.round(a / 60) + "m" : a < 86400 ? Math.round(a / 3600) + "h" : Math.round(a / 86400) + "d";
    return secs >= 0 ? txt + " ago" : "in " + txt;
  }

  function stateBadge(phase) {
    return h("span", { class: "badge state-" + phase, "data-field": "state", "data-value": phase }, phase);
  }

  // ---- the API -----------------------------------------------------------

  // { status, body, message } for any answer; never throws for an HTTP
  // status (a 403 is an answer to show), only for a network failure.
  async function api(method, path, body, signal) {
    const headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = "Bearer " + state.token;
    const init = { method, headers, signal, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    const text = await resp.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
    const err = json && json.error ? json.error : null;
    const message = err
      ? resp.status + " " + resp.statusText + ": " + err.message + (err.field ? " (" + err.field + ")" : "")
      : resp.status + " " + resp.statusText;
    return { status: resp.status, body: json, message };
  }

  async function getJson(path, signal) {
    const r = await api("GET", path, undefined, signal);
    if (r.status !== 200) throw new Error(r.message);
    return r.body;
  }

  // ---- the token ---------------------------------------------------------

  async function useToken(token, remember) {
    state.token = token.trim();
    sessionStorage.removeItem(STORAGE_KEY);
    state.me = null;
    if (!state.token) return showLogin();
    const r = await api("GET", "/v1/whoami");
    if (r.status !== 200) {
      state.token = "";
      notice(r.message, "error");
      return showLogin();
    }
    if (remember) sessionStorage.setItem(STORAGE_KEY, state.token);
    state.me = r.body;
    const who = document.getElementById("who");
    document.getElementById("who-text").textContent =
      "signed in as " + r.body.actor + " (" + (r.body.roles || []).join(", ") + ")";
    document.getElementById("who-text").setAttribute("data-actor", r.body.actor);
    who.hidden = false;
    document.getElementById("login").hidden = true;
    notice("");
    route();
  }

  function showLogin() {
    state.me = null;
    document.getElementById("who").hidden = true;
    document.getElementById("login").hidden = false;
    stopPage();
    const main = document.getElementById("main");
    main.replaceChildren(h("p", { class: "muted" }, "Enter an API token above to see rollouts."));
  }

  function has(role) {
    const roles = (state.me && state.me.roles) || [];
    return roles.includes("admin") || roles.includes(role);
  }

  function approverRoles() {
    const roles = (state.me && state.me.roles) || [];
    return roles.filter((r) => r.startsWith("approver:")).map((r) => r.slice("approver:".length));
  }

  // ---- pages -------------------------------------------------------------

  function stopPage() {
    if (state.page && state.page.stop) state.page.stop();
    state.page = null;
  }

  function route() {
    stopPage();
    if (!state.me) return showLogin();
    const hash = location.hash.replace(/^#/, "") || "/";
    const parts = hash.split("?")[0].split("/").filter(Boolean).map(decodeURIComponent);
    const main = document.getElementById("main");
    main.replaceChildren();
    if (parts[0] === "rollouts" && parts[1]) state.page = rolloutPage(main, parts[1]);
    else if (parts[0] === "incidents" && parts[1]) state.page = incidentPage(main, parts[1]);
    else if (parts[0] === "incidents") state.page = incidentsPage(main);
    else state.page = rolloutsPage(main, new URLSearchParams(hash.split("?")[1] || ""));
  }

  // The list answer: an array, or a page object (`items`/`rollouts`).
  function listOf(body, key) {
    if (Array.isArray(body)) return body;
    if (body && Array.isArray(body.items)) return body.items;
    if (body && Array.isArray(body[key])) return body[key];
    return [];
  }

  // -- rollouts list --

  const PHASES = ["pending", "progressing", "paused", "awaiting-approval", "rolling-back",
    "promoted", "rolled-back", "aborted", "inconclusive", "concluded"];

  function rolloutsPage(main, params) {
    const ctl = new AbortController();
    const service = h("input", { id: "filter-service", type: "search", placeholder: "any", value: params.get("service") || "" });
    const phase = h("select", { id: "filter-state" }, h("option", { value: "" }, "any"),
      PHASES.map((p) => h("option", { value: p }, p)));
    phase.value = params.get("state") || "";
    const body = h("tbody", { id: "rollouts" });
    const count = h("p", { class: "muted", id: "rollouts-count" });
    main.append(
      h("h1", {}, "Rollouts"),
      h("div", { class: "filters" },
        h("label", {}, "service", service),
        h("label", {}, "state", phase)),
      h("table", {}, h("thead", {}, h("tr", {},
        ["rollout", "service", "state", "weight", "step", "canary", "baseline", "policy", "started"].map((c) => h("th", {}, c)))),
      body),
      count);
    let all = [];
    let more = false; // the server has older rollouts than the page read
    const render = () => {
      const sv = service.value.trim();
      const st = phase.value;
      const rows = all.filter((r) => (!sv || r.service === sv) && (!st || r.state === st))
        .slice().reverse();
      body.replaceChildren(...rows.map((r) => h("tr", { "data-rollout": r.id },
        h("td", {}, h("a", { href: "#/rollouts/" + encodeURIComponent(r.id) }, r.id)),
        h("td", { "data-field": "service" }, r.service),
        h("td", {}, stateBadge(r.state)),
        h("td", { class: "num", "data-field": "weight", "data-value": r.weight }, r.weight + "%"),
        h("td", { class: "num" }, stepText(r)),
        h("td", { class: "version" }, r.canary),
        h("td", { class: "version" }, r.baseline),
        h("td", {}, r.policy),
        h("td", {}, when(r.started_at)))));
      count.textContent = rows.length + " of " + all.length + " rollouts shown" +
        (more ? " (the newest " + LIST_LIMIT + "; older ones: canaryd rollout list --cursor)" : "");
      const q = new URLSearchParams();
      if (sv) q.set("service", sv);
      if (st) q.set("state", st);
      const want = "#/" + (q.toString() ? "?" + q : "");
      // Only while the list is still the page asked for: a navigation
      // elsewhere may have changed the hash before its hashchange event
      // runs, and rewriting it here would undo that navigation.
      const onList = location.hash === "" || location.hash === "#/" || location.hash.startsWith("#/?");
      if (onList && location.hash !== want && !(want === "#/" && location.hash === "")) history.replaceState(null, "", want);
    };
    service.addEventListener("input", render);
    phase.addEventListener("change", render);
    let timer = null;
    const load = async () => {
      try {
        const page = await getJson("/v1/rollouts?limit=" + LIST_LIMIT, ctl.signal);
        all = listOf(page, "rollouts");
        more = Boolean(page && page.next);
        render();
        main.setAttribute("data-loaded", "rollouts");
      } catch (e) {
        if (!ctl.signal.aborted) notice(String(e.message || e), "error");
      }
      // States change while the list is open: read it again.
      if (!ctl.signal.aborted) timer = setTimeout(load, LIST_REFRESH_MS);
    };
    load();
    return { stop: () => { ctl.abort(); clearTimeout(timer); } };
  }

  function stepText(r) {
    // `step` is the 0-based index of the policy's steps.
    return "step " + (r.step + 1) + " of " + r.steps;
  }

  // -- one rollout --

  function rolloutPage(main, id) {
    const ctl = new AbortController();
    const page = {
      id,
      rollout: null,
      series: null,
      events: [],
      lastEventId: null,
      stopped: false,
      timer: null,
      stop() {
        this.stopped = true;
        ctl.abort();
        if (this.timer) clearTimeout(this.timer);
      },
    };
    const head = h("div", { id: "rollout-head" });
    const actions = actionsPanel(page);
    const approvals = h("div", { id: "approvals" });
    const triggers = h("div", { id: "triggers" });
    const gates = h("div", { id: "gates" });
    const charts = h("div", { id: "charts", class: "charts" });
    const events = h("ol", { id: "events", class: "events" });
    main.append(head, actions.el, h("h2", {}, "Approvals"), approvals,
      h("h2", {}, "Triggers"), triggers, h("h2", {}, "Gates"), gates,
      h("h2", {}, "Canary vs baseline"), charts,
      h("h2", {}, "Events since this page opened"), events);
    page.render = () => {
      const r = page.rollout;
      if (!r) return;
      renderHead(head, r);
      actions.update(r);
      renderApprovals(approvals, r);
      renderTriggers(triggers, r);
      renderGates(gates, r);
      main.setAttribute("data-loaded", "rollout");
    };
    page.renderCharts = () => renderCharts(charts, page.series);
    page.addEvent = (ev) => {
      events.append(h("li", { "data-phase": ev.phase },
        when(ev.at), " · ", stateBadge(ev.phase), " · weight " + ev.weight + "% · step " + (ev.step + 1) + " · ",
        ev.actor + ": " + ev.message));
    };
    page.refresh = async () => {
      const r = await api("GET", "/v1/rollouts/" + encodeURIComponent(id), undefined, ctl.signal);
      if (r.status !== 200) throw new Error(r.message);
      page.rollout = r.body;
      page.render();
    };
    page.refreshSeries = async () => {
      const since = page.series && page.series.points.length
        ? page.series.points[page.series.points.length - 1].start_ms + 1 : null;
      const r = await api("GET", "/v1/rollouts/" + encodeURIComponent(id) + "/series" + (since ? "?since=" + since : ""), undefined, ctl.signal);
      if (r.status !== 200) throw new Error(r.message);
      if (!page.series || since === null) page.series = r.body;
      else {
        page.series.points.push(...r.body.points);
        if (page.series.points.length > MAX_POINTS) page.series.points.splice(0, page.series.points.length - MAX_POINTS);
      }
      page.renderCharts();
    };
    (async () => {
      try {
        await page.refresh();
        await page.refreshSeries();
      } catch (e) {
        if (!ctl.signal.aborted) notice(String(e.message || e), "error");
        return;
      }
      stream(page, ctl.signal);
      poll(page);
    })();
    return page;
  }

  // Numbers change every analysis interval, which the event stream does
  // not announce (it carries transitions): while the rollout runs, read
  // the rollout and the new intervals once per analysis interval.
  function poll(page) {
    const every = Math.max(1000, ((page.series && page.series.interval_s) || 5) * 1000);
    page.timer = setTimeout(async () => {
      if (page.stopped) return;
      try {
        await page.refresh();
        await page.refreshSeries();
      } catch (e) {
        if (!page.stopped) notice(String(e.message || e), "error");
      }
      if (!page.stopped && !(page.rollout && page.rollout.outcome)) poll(page);
    }, every);
  }

  // The rollout's Server-Sent Events, read with fetch() so the token goes
  // in the Authorization header (EventSource cannot send one, and the
  // token must not be a cookie or sit in a URL). Reconnects with
  // `Last-Event-ID` (when the daemon sends `id:` lines) until the rollout
  // ends or the page closes.
  async function stream(page, signal) {
    let wait = RECONNECT_MIN_MS;
    while (!page.stopped) {
      let ended = false;
      try {
        const headers = { Accept: "text/event-stream", Authorization: "Bearer " + state.token };
        if (page.lastEventId !== null) headers["Last-Event-ID"] = page.lastEventId;
        const resp = await fetch("/v1/rollouts/" + encodeURIComponent(page.id) + "/events",
          { headers, signal, cache: "no-store", credentials: "omit" });
        if (resp.status !== 200) {
          const text = await resp.text();
          let msg = resp.status + " " + resp.statusText;
          try { msg += ": " + JSON.parse(text).error.message; } catch (_) { /* not JSON */ }
          notice("live updates: " + msg, "error");
          if (resp.status === 401 || resp.status === 403 || resp.status === 404) return;
        } else {
          wait = RECONNECT_MIN_MS;
          document.getElementById("main").setAttribute("data-live", "open");
          ended = await readEvents(resp.body, page);
        }
      } catch (e) {
        if (page.stopped) return;
      }
      if (ended || page.stopped) return;
      document.getElementById("main").setAttribute("data-live", "reconnecting");
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(RECONNECT_MAX_MS, wait * 2);
    }
  }

  // Reads one event stream to its end; true when the rollout ended.
  async function readEvents(body, page) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    let ended = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const ev = { event: "message", data: [], id: null };
        for (const line of block.split("\n")) {
          if (!line || line.startsWith(":")) continue;
          const i = line.indexOf(":");
          const field = i < 0 ? line : line.slice(0, i);
          const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
          if (field === "event") ev.event = val;
          else if (field === "data") ev.data.push(val);
          else if (field === "id") ev.id = val;
        }
        if (ev.id !== null) page.lastEventId = ev.id;
        if (!ev.data.length) continue;
        let data;
        try { data = JSON.parse(ev.data.join("\n")); } catch (_) { continue; }
        if (ev.event === "status" || ev.event === "end") {
          page.rollout = data;
          page.render();
          if (ev.event === "end" || data.outcome) ended = true;
        } else if (ev.event === "transition") {
          page.addEvent(data);
          page.refresh().catch(() => {});
          page.refreshSeries().catch(() => {});
        } else if (ev.event === "lagged") {
          page.refresh().catch(() => {});
        }
      }
    }
    return ended;
  }

  function renderHead(el, r) {
    const facts = [
      ["service", r.service],
      ["canary", h("span", { class: "version" }, r.canary)],
      ["baseline", h("span", { class: "version" }, r.baseline)],
      ["state", stateBadge(r.state)],
      ["weight", h("span", { "data-field": "weight", "data-value": r.weight }, r.weight + "% of traffic to the canary" + (r.pending_weight !== null && r.pending_weight !== undefined ? " (" + r.pending_weight + "% asked of the router)" : ""))],
      ["step", h("span", { "data-field": "step", "data-value": r.step }, stepText(r))],
      // The daemon says it whole ("waiting for approval by risk"): the
      // label must not say it twice, and "why" only when it adds something.
      ["waiting", r.waiting_for ? r.waiting_for.replace(/^waiting for /, "for ") : "–"],
      ["why", r.reason && r.reason !== r.waiting_for ? r.reason : "–"],
      ["policy", r.policy + " (" + String(r.policy_version).slice(0, 12) + ")"],
      ["change type", r.change_type + (r.dry_run ? ", dry run" : "")],
      ["started", when(r.started_at) + " by " + r.started_by],
      ["time in step", r.time_in_step_s + " s"],
      ["source", r.source ? r.source.status + " · " + (r.source.sources || []).join(", ") + (r.source.last_error ? " · " + r.source.last_error : "") : "–"],
    ];
    if (r.router_error) facts.push(["router error", r.router_error]);
    if (r.incident) facts.push(["incident", h("a", { href: "#/incidents/" + encodeURIComponent(r.incident), id: "incident-link" }, r.incident)]);
    const steps = h("div", { class: "steps", id: "steps", title: "the policy's steps" });
    for (let i = 0; i < r.steps; i++) {
      const cls = i < r.step || (r.state === "promoted") ? "done" : i === r.step ? "current" : "";
      steps.append(h("span", { class: cls }, String(i + 1)));
    }
    el.replaceChildren(
      h("h1", {}, "Rollout ", h("span", { id: "rollout-id" }, r.id)),
      steps,
      h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
  }

  function renderApprovals(el, r) {
    const a = r.approvals;
    if (!a) {
      el.replaceChildren(h("p", { class: "muted" }, "Not waiting for approvals."));
      return;
    }
    const given = new Set((a.given || []).map((g) => g.role));
    el.replaceChildren(
      h("p", {}, "Step " + (a.step + 1) + " waits since " + when(a.since) + (a.deadline ? ", deadline " + when(a.deadline) : ", no deadline") + "."),
      h("table", {}, h("thead", {}, h("tr", {}, ["role", "approved by", "when", "reason", "ticket"].map((c) => h("th", {}, c)))),
        h("tbody", {}, (a.roles || []).map((role) => {
          const g = (a.given || []).find((x) => x.role === role);
          return h("tr", { "data-role": role },
            h("td", {}, role),
            h("td", { "data-field": "approved-by" }, g ? g.actor : given.has(role) ? "yes" : "waiting"),
            h("td", {}, g ? when(g.at) : "–"),
            h("td", {}, g ? g.reason : "–"),
            h("td", {}, g && g.ticket ? g.ticket : "–"));
        }))));
  }

  // The state of a trigger's evidence: the contract's `state` when the
  // daemon sends it; otherwise derived without ever claiming "shown".
  function evidenceState(t) {
    if (t.state) return t.state;
    if (t.verdict === "fired") return "fired";
    if (!t.samples) return "no_data";
    return "gathering";
  }

  const STATE_WORDS = { no_data: "no data yet", gathering: "gathering", shown: "within tolerance, shown", fired: "fired", stopped: "stopped" };

  function progressOf(t) {
    if (evidenceState(t) === "no_data") return null;
    if (typeof t.progress === "number") return Math.max(0, Math.min(1, t.progress));
    if (typeof t.statistic === "number" && typeof t.boundary === "number" && t.boundary > 0 && t.kind === "statistical")
      return Math.max(0, Math.min(1, Math.max(0, t.statistic) / t.boundary));
    return null;
  }

  function renderTriggers(el, r) {
    if (!r.triggers || !r.triggers.length) {
      el.replaceChildren(h("p", { class: "muted" }, "The policy has no triggers."));
      return;
    }
    el.replaceChildren(h("table", {},
      h("thead", {}, h("tr", {}, ["trigger", "evidence", "estimate", "interval", "tolerance", "way to rollback", "samples", "in words"].map((c) => h("th", {}, c)))),
      h("tbody", {}, r.triggers.map((t) => {
        const st = evidenceState(t);
        const p = progressOf(t);
        const unit = t.unit;
        const summary = t.summary || fallbackSummary(t, st, p);
        return h("tr", { "data-trigger": t.name },
          h("td", {}, t.name, h("div", { class: "muted" }, t.kind)),
          h("td", {}, h("span", { class: "badge ev-" + st, "data-field": "evidence-state", "data-value": st }, STATE_WORDS[st] || st)),
          h("td", { class: "num", "data-field": "estimate", "data-value": t.estimate === null || t.estimate === undefined ? "" : t.estimate }, withUnit(t.estimate, unit)),
          h("td", { class: "num", "data-field": "interval" }, intervalText(t.interval, unit)),
          h("td", { class: "num", "data-field": "tolerance", "data-value": t.tolerance === null || t.tolerance === undefined ? "" : t.tolerance }, t.tolerance === null || t.tolerance === undefined ? "–" : withUnit(t.tolerance, unit)),
          h("td", { class: "num", "data-field": "progress", "data-value": p === null ? "" : p },
            p === null ? "–" : [h("progress", { max: 1, value: p }), " " + Math.round(p * 100) + "% of the way"]),
          h("td", { class: "num", "data-field": "samples", "data-value": t.samples }, String(t.samples)),
          h("td", { "data-field": "summary" }, summary, t.note ? h("div", { class: "muted" }, t.note) : null));
      }))));
  }

  // Words for a trigger when the daemon sends no `summary`.
  function fallbackSummary(t, st, p) {
    if (st === "no_data") return "no data yet";
    const way = p === null ? "" : ": " + Math.round(p * 100) + "% of the way to rollback";
    if (st === "fired") return "fired" + way;
    return "gathering" + way + (t.kind === "statistical" && typeof t.statistic === "number"
      ? " (log e-value " + num(t.statistic) + " of boundary " + num(t.boundary) + ")" : "");
  }

  function renderGates(el, r) {
    if (!r.gates || !r.gates.length) {
      el.replaceChildren(h("p", { class: "muted" }, "The policy has no promotion gates."));
      return;
    }
    el.replaceChildren(h("table", {},
      h("thead", {}, h("tr", {}, ["gate", "before weight", "state", "in words"].map((c) => h("th", {}, c)))),
      h("tbody", {}, r.gates.map((g) => {
        const st = g.state || (g.shown ? "shown" : "gathering");
        return h("tr", { "data-gate": g.name },
          h("td", {}, g.name),
          h("td", { class: "num" }, g.before + "%"),
          h("td", {}, h("span", { class: "badge ev-" + st, "data-field": "gate-state", "data-value": st }, STATE_WORDS[st] || st)),
          h("td", {}, g.summary || (g.shown ? "shown as of the latest interval" : "not shown yet")));
      }))));
  }

  // -- actions --

  function actionsPanel(page) {
    const reason = h("input", { id: "action-reason", type: "text", placeholder: "why (recorded in the audit log)", size: 32 });
    const ticket = h("input", { id: "action-ticket", type: "text", placeholder: "optional", size: 12 });
    const role = h("select", { id: "approve-role" });
    const result = h("p", { id: "action-result", class: "result", role: "status" });
    const buttons = {};
    const act = (name) => async () => {
      const r = page.rollout;
      if (!r) return;
      const body = { reason: reason.value.trim() || "from the dashboard" };
      if (ticket.value.trim()) body.ticket = ticket.value.trim();
      if (name === "approve") body.role = role.value || ((r.approvals && r.approvals.roles[0]) || "");
      result.className = "result";
      result.textContent = name + "…";
      let a;
      try {
        a = await api("POST", "/v1/rollouts/" + encodeURIComponent(r.id) + "/" + name, body);
      } catch (e) {
        result.className = "result error";
        result.textContent = name + ": " + (e.message || e);
        return;
      }
      result.setAttribute("data-status", a.status);
      if (a.status === 200) {
        result.className = "result ok";
        result.textContent = name + ": done (200)";
        page.rollout = a.body;
        page.render();
      } else {
        result.className = "result error";
        result.textContent = name + " refused: " + a.message;
      }
    };
    for (const name of ["pause", "resume", "approve", "promote", "abort"]) {
      buttons[name] = h("button", { type: "button", id: "btn-" + name, onclick: act(name) }, name);
    }
    const el = h("div", { class: "actions", id: "actions" },
      h("label", {}, "reason", reason), h("label", {}, "ticket", ticket),
      buttons.pause, buttons.resume,
      h("label", {}, "approve as", role), buttons.approve,
      buttons.promote, buttons.abort);
    const wrap = h("div", {}, el, result);
    return {
      el: wrap,
      update(r) {
        const live = !r.outcome;
        const operate = has("operator");
        const mine = has("admin") ? (r.approvals ? r.approvals.roles : []) : approverRoles();
        const wanted = r.approvals ? r.approvals.roles.filter((x) => !(r.approvals.given || []).some((g) => g.role === x)) : [];
        const choices = wanted.filter((x) => mine.includes(x));
        const keep = role.value;
        role.replaceChildren(...(choices.length ? choices : wanted).map((x) => h("option", { value: x }, x)));
        if ([...role.options].some((o) => o.value === keep)) role.value = keep;
        // Offer what the token may do; the API checks again (a forced
        // click gets the API's 403, shown as it is).
        const why = (ok, need) => (ok ? null : "needs " + need);
        const set = (b, enabled, title) => {
          b.disabled = !enabled;
          if (title) b.title = title; else b.removeAttribute("title");
        };
        set(buttons.pause, live && operate && r.state !== "paused", why(operate, "operator"));
        set(buttons.resume, live && operate && r.state === "paused", why(operate, "operator"));
        set(buttons.promote, live && operate, why(operate, "operator"));
        set(buttons.abort, live && operate, why(operate, "operator"));
        set(buttons.approve, live && r.state === "awaiting-approval" && choices.length > 0,
          choices.length ? null : "needs an approver role this step waits for");
      },
    };
  }

  // -- charts --

  function renderCharts(el, series) {
    if (!series || !series.metrics || !series.metrics.length) {
      el.replaceChildren(h("p", { class: "muted" }, "The policy has no metrics to chart."));
      return;
    }
    el.setAttribute("data-points", series.points.length);
    el.replaceChildren(...series.metrics.map((m, i) => chart(series, m, i)));
  }

  function chart(series, m, i) {
    const W = 560, H = 200, L = 56, R = 40, T = 10, B = 28;
    const pts = series.points;
    const unit = m.unit || "";
    const title = m.kind === "latency" ? m.metric + " p" + Math.round(m.quantile * 1000) / 10
      : m.kind === "ratio" ? m.metric + " (rate)" : m.metric + " (mean)";
    const svg = s("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": title + ": canary vs baseline" });
    const fig = h("figure", { class: "chart", "data-metric": m.key, "data-points": pts.length },
      h("figcaption", {}, title + (unit ? " · " + unit : "")), svg);
    if (!pts.length) {
      svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "tick" }, "no intervals yet"));
      return fig;
    }
    const xs = pts.map((p) => p.start_ms);
    const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
    const vals = [];
    for (const p of pts) for (const v of [p.canary[i], p.baseline[i]]) if (typeof v === "number") vals.push(v);
    let y0 = vals.length ? Math.min(0, ...vals) : 0;
    let y1 = vals.length ? Math.max(...vals) : 1;
    if (y1 <= y0) y1 = y0 + 1;
    y1 += (y1 - y0) * 0.08;
    const X = (t) => L + ((t - x0) / (x1 - x0)) * (W - L - R);
    const Y = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
    const YW = (w) => T + (1 - w / 100) * (H - T - B);
    svg.append(
      s("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
      s("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
      s("line", { class: "axis", x1: W - R, y1: T, x2: W - R, y2: H - B }));
    for (const v of [y0, (y0 + y1) / 2, y1]) {
      svg.append(s("text", { class: "tick", x: L - 4, y: Y(v) + 3, "text-anchor": "end" }, num(v) + (unit === "%" ? "%" : "")));
    }
    svg.append(
      s("text", { class: "tick", x: W - R + 4, y: YW(100) + 3 }, "100%"),
      s("text", { class: "tick", x: W - R + 4, y: YW(0) + 3 }, "0%"),
      s("text", { class: "tick", x: L, y: H - 8 }, new Date(x0).toISOString().slice(11, 19) + "Z"),
      s("text", { class: "tick", x: W - R, y: H - 8, "text-anchor": "end" }, new Date(x1).toISOString().slice(11, 19) + "Z"));
    const path = (get, scale) => {
      let d = "", pen = false;
      for (const p of pts) {
        const v = get(p);
        if (typeof v !== "number") { pen = false; continue; }
        d += (pen ? "L" : "M") + X(p.start_ms).toFixed(1) + " " + scale(v).toFixed(1) + " ";
        pen = true;
      }
      return d.trim();
    };
    const wd = path((p) => p.weight, YW);
    if (wd) svg.append(s("path", { class: "weight", d: wd }));
    const bd = path((p) => p.baseline[i], Y);
    const cd = path((p) => p.canary[i], Y);
    if (bd) svg.append(s("path", { class: "baseline", d: bd }));
    if (cd) svg.append(s("path", { class: "canary", d: cd }));
    // Each interval a dot while there are few (one interval is no line).
    if (pts.length <= 120) {
      for (const p of pts) {
        for (const [cls, v] of [["baseline", p.baseline[i]], ["canary", p.canary[i]]]) {
          if (typeof v === "number") svg.append(s("circle", { class: "dot " + cls, cx: X(p.start_ms).toFixed(1), cy: Y(v).toFixed(1), r: 2.5 }));
        }
      }
    }
    // The legend: each arm's latest interval with data.
    const latest = (arm) => {
      for (let k = pts.length - 1; k >= 0; k--) if (typeof pts[k][arm][i] === "number") return pts[k];
      return null;
    };
    const armText = (arm) => {
      const p = latest(arm);
      return p ? " " + withUnit(p[arm][i], m.unit || (m.kind === "mean" ? "(the signal's own unit)" : m.unit)) + " (n=" + p[arm + "_n"][i] + ", " + ago(new Date(p.start_ms)) + ") · " : " no data yet · ";
    };
    const last = pts[pts.length - 1];
    fig.append(h("div", { class: "legend" },
      h("span", { class: "c" }, "canary"), armText("canary"),
      h("span", { class: "b" }, "baseline"), armText("baseline"),
      h("span", { class: "w" }, "weight (dashed, right axis)"), " " + (last.weight === null ? "–" : last.weight + "%"),
      " · " + pts.length + " intervals to " + when(last.start_ms) + (series.earlier ? " · older intervals not shown" : "")));
    return fig;
  }

  // -- incidents --

  function incidentsPage(main) {
    const ctl = new AbortController();
    const body = h("tbody", { id: "incidents" });
    main.append(h("h1", {}, "Incidents"),
      h("table", {}, h("thead", {}, h("tr", {}, ["incident", "service", "trigger", "severity", "status", "opened"].map((c) => h("th", {}, c)))), body));
    (async () => {
      try {
        const list = listOf(await getJson("/v1/incidents", ctl.signal), "incidents").slice().reverse();
        body.replaceChildren(...list.map((i) => h("tr", { "data-incident": i.id },
          h("td", {}, h("a", { href: "#/incidents/" + encodeURIComponent(i.id) }, i.id)),
          h("td", {}, i.service), h("td", {}, i.trigger), h("td", {}, i.severity),
          h("td", {}, i.status), h("td", {}, when(i.opened_at)))));
        if (!list.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No incidents.")));
        main.setAttribute("data-loaded", "incidents");
      } catch (e) {
        if (!ctl.signal.aborted) notice(String(e.message || e), "error");
      }
    })();
    return { stop: () => ctl.abort() };
  }

  function incidentPage(main, id) {
    const ctl = new AbortController();
    (async () => {
      let i;
      try {
        i = await getJson("/v1/incidents/" + encodeURIComponent(id), ctl.signal);
      } catch (e) {
        if (!ctl.signal.aborted) notice(String(e.message || e), "error");
        return;
      }
      // One evidence object today; a list of entries is shown entry by entry.
      const evs = Array.isArray(i.evidence) ? i.evidence : [i.evidence || {}];
      const rr = i.router_result;
      main.append(
        h("h1", {}, "Incident ", h("span", { id: "incident-id" }, i.id)),
        h("dl", { class: "facts" },
          h("dt", {}, "service"), h("dd", {}, i.service),
          h("dt", {}, "rollout"), h("dd", {}, h("a", { href: "#/rollouts/" + encodeURIComponent(i.rollout_id) }, i.rollout_id)),
          h("dt", {}, "trigger"), h("dd", {}, i.trigger),
          h("dt", {}, "severity"), h("dd", {}, i.severity),
          h("dt", {}, "opened"), h("dd", {}, when(i.opened_at)),
          h("dt", {}, "status"), h("dd", {}, i.status + (i.reviewed_by ? " by " + i.reviewed_by + " " + when(i.reviewed_at) + ": " + i.review_note : "")),
          h("dt", {}, "router"), h("dd", {}, rr ? (rr.error ? "failed to set " + rr.weight + "%: " + rr.error : "traffic back to " + rr.weight + "% canary " + when(rr.at)) : "no answer yet")),
        h("h2", {}, "Evidence"),
        ...evs.map((ev, n) => h("div", { class: "evidence", id: n ? null : "evidence", "data-kind": ev.kind || "" },
          h("p", { id: n ? null : "evidence-summary", class: "evidence-summary" }, ev.summary || evidenceWords(ev)),
          evidenceFacts(ev))),
        h("h2", {}, "Timeline"),
        h("ol", { class: "events", id: "timeline" }, (i.timeline || []).map((e) =>
          h("li", {}, when(e.at), " · ", stateBadge(e.phase), " · weight " + e.weight + "% · " + e.actor + ": " + e.message))),
        h("h2", {}, "Notifications"),
        (i.notifications || []).length
          ? h("ul", {}, i.notifications.map((n) => h("li", {}, n.target + ": " + (n.delivered_at ? "delivered " + when(n.delivered_at) : n.attempts + " attempts, " + (n.last_error || "pending")))))
          : h("p", { class: "muted" }, "None."));
      main.setAttribute("data-loaded", "incident");
    })();
    return { stop: () => ctl.abort() };
  }

  // Evidence in words when the daemon sends no `summary`.
  function evidenceWords(ev) {
    switch (ev.kind) {
      case "statistical": {
        const iv = ev.interval || {};
        const bounds = iv.lower !== null && iv.lower !== undefined && (iv.upper === null || iv.upper === undefined)
          ? "at least " + num(iv.lower) : iv.upper !== null && iv.upper !== undefined && (iv.lower === null || iv.lower === undefined)
            ? "at most " + num(iv.upper) : "[" + num(iv.lower) + ", " + num(iv.upper) + "]";
        return (ev.estimand || "estimate") + ": " + num(ev.estimate) + ", " +
          (iv.level ? Math.round(iv.level * 1000) / 10 + "% anytime-valid interval " : "interval ") + bounds +
          "; evidence ln e " + num(ev.log_e_value) + " reached the rollback boundary " + num(ev.log_boundary) +
          "; canary " + (ev.canary ? ev.canary.events + " of " + ev.canary.exposure : "–") +
          ", baseline " + (ev.baseline ? ev.baseline.events + " of " + ev.baseline.exposure : "–") +
          " between " + when(ev.window_start) + " and " + when(ev.window_end);
      }
      case "objective":
        return (ev.measured || "measured") + ": observed " + num(ev.observed) + " against the limit " + num(ev.limit) +
          " between " + when(ev.window_start) + " and " + when(ev.window_end);
      case "router":
        return "the router (" + (ev.router || "?") + ") did not take weight " + ev.wanted_weight + "% after " +
          ev.attempts + " attempts: " + ev.error + (ev.still_retrying ? "; still retrying" : "");
      default:
        return "no evidence recorded";
    }
  }

  function evidenceFacts(ev) {
    const keys = Object.keys(ev).filter((k) => k !== "summary" && k !== "kind").sort();
    if (!keys.length) return null;
    return h("details", {}, h("summary", {}, "all fields (raw, on the test's own scale; the words above give the units)"),
      h("dl", { class: "facts" }, keys.map((k) => {
        const v = ev[k];
        const text = /(_at|window_start|window_end|evidence_since)$/.test(k) && typeof v === "number" ? when(v)
          : typeof v === "object" && v !== null ? JSON.stringify(v) : String(v);
        return [h("dt", {}, k), h("dd", {}, text)];
      })));
  }

  // ---- start -------------------------------------------------------------

  document.getElementById("login").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = document.getElementById("token-input");
    const token = input.value;
    input.value = "";
    useToken(token, document.getElementById("remember").checked).catch((err) => notice(String(err), "error"));
  });
  document.getElementById("logout").addEventListener("click", () => {
    state.token = "";
    sessionStorage.removeItem(STORAGE_KEY);
    showLogin();
    notice("token forgotten");
  });
  window.addEventListener("hashchange", route);
  if (state.token) useToken(state.token, true).catch((err) => notice(String(err), "error"));
  else showLogin();
})();
