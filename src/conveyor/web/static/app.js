// Conveyor dashboard: calls the JSON API (/api/v2) with the key from sessionStorage.
"use strict";

const KEY = "conveyor.key";
const PROJECT = "conveyor.project";  // the project picked in the header switcher (its id)
const TERMINAL = new Set(["SUCCESS", "FAILURE", "REVOKED", "TIMEDOUT"]);
const RUNNING = new Set(["PENDING", "STARTED", "RETRY"]);
const $ = (sel, root = document) => root.querySelector(sel);

function key() { return sessionStorage.getItem(KEY); }

function setKey(value) {
  sessionStorage.setItem(KEY, value);
  // The event streams (EventSource cannot send headers) read the key from this session cookie.
  document.cookie = `conveyor_key=${encodeURIComponent(value)}; path=/api/; SameSite=Strict`;
}

function currentProject() { return sessionStorage.getItem(PROJECT) || ""; }

function signOut() {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(PROJECT);
  document.cookie = "conveyor_key=; path=/api/; max-age=0; SameSite=Strict";
  location.href = "/login";
}

async function api(path, options = {}) {
  const headers = { Authorization: `Token ${key()}`, ...(options.headers || {}) };
  if (options.body && !headers["Content-Type"]) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) { signOut(); throw new Error("unauthenticated"); }
  if (!response.ok) {
    let message = `${response.status}`;
    try { message = (await response.json()).message || message; } catch (_) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response.status === 204 ? null : response.json();
}

// Item files (sample thumbnails, saliency maps) need the Authorization header, so an <img> cannot
// load them by URL: fetch them and show them through a blob URL.
async function imageBlob(path) {
  const response = await fetch(path, { headers: { Authorization: `Token ${key()}` } });
  if (!response.ok) throw new Error(`${response.status}`);
  return URL.createObjectURL(await response.blob());
}

function flash(message) {
  const box = $("#flash");
  box.textContent = message;
  box.hidden = !message;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    // Inline styles through the CSSOM: the Content-Security-Policy refuses style attributes.
    if (name === "class") node.className = value;
    else if (name === "style") node.style.cssText = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  return node;
}

function when(iso) { return iso ? new Date(iso).toLocaleString() : "—"; }
function ms(value) {
  if (value === null || value === undefined) return "—";
  if (value < 1000) return `${value} ms`;
  const s = value / 1000;
  return s < 120 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}
function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB"]; let v = n / 1024; let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(1)} ${units[i]}`;
}
function pct(p) { return `${Math.round((p || 0) * 100)} %`; }

function bar(progress, label) {
  const value = Math.round((progress || 0) * 100);
  const outer = el("div", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
    "aria-valuenow": String(value), "aria-label": label });
  outer.append(el("span", { style: `width:${value}%` }), el("em", {}, `${value} %`));
  return outer;
}

function badge(status) { return el("span", { class: `badge s-${status}` }, status); }

function canWrite(job) { return (job.user_permissions || []).includes("run"); }

// ----------------------------------------------------------------- header
// The projects the key sees, each with what the key may do there (`view`, `submit`, `manage`).
let projectsLoaded = null;
function projects() {
  projectsLoaded = projectsLoaded || api("/api/v2/projects/");
  return projectsLoaded;
}

function allows(list, permission) {
  const picked = currentProject();
  return list.some((p) => (!picked || String(p.id) === picked) && (p.user_permissions || []).includes(permission));
}

async function initHeader() {
  let list;
  try { list = await projects(); } catch (_) { return; }
  const select = $("#project-switch");
  if (select) {
    if (currentProject() && !list.some((p) => String(p.id) === currentProject())) sessionStorage.removeItem(PROJECT);
    select.replaceChildren(el("option", { value: "" }, "All projects"),
      ...list.map((p) => el("option", { value: String(p.id) }, p.name || p.slug)));
    select.value = currentProject();
    select.addEventListener("change", () => {
      sessionStorage.setItem(PROJECT, select.value);
      document.dispatchEvent(new CustomEvent("conveyor:project", { detail: select.value }));
      showLinks(list);
    });
  }
  showLinks(list);
}

// Viewer keys get no Submit link; only owner keys get the API keys link.
function showLinks(list) {
  const submit = $("#nav-submit");
  if (submit) submit.hidden = !allows(list, "submit");
  const keys = $("#nav-keys");
  if (keys) keys.hidden = !list.some((p) => (p.user_permissions || []).includes("manage"));
}

// ------------------------------------------------------------------ login
function initLogin() {
  $("#login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = $("#key").value.trim();
    const response = await fetch("/api/v2/projects/", { headers: { Authorization: `Token ${value}` } });
    if (!response.ok) { flash("That key was not accepted."); return; }
    setKey(value);
    location.href = "/";
  });
}

// ------------------------------------------------------------------- jobs
function initJobs() {
  const state = { ordering: "-created_at", url: null };
  const tbody = $("#jobs tbody");
  const rows = new Map();

  api("/api/v2/pipelines/").then((list) => {
    const select = $("#f-pipeline");
    const seen = new Set();
    for (const p of list) {
      if (seen.has(p.slug)) continue;
      seen.add(p.slug);
      select.append(el("option", { value: p.slug }, p.name));
    }
  });

  function query() {
    const form = new FormData($("#filters"));
    const params = new URLSearchParams({ ordering: state.ordering });
    if (currentProject()) params.set("project", currentProject());
    for (const [name, value] of form.entries()) {
      if (!value) continue;
      params.set(name, name.startsWith("created_") ? new Date(`${value}T00:00:00Z`).toISOString() : value);
    }
    return `/api/v2/jobs/?${params}`;
  }

  function renderRow(job) {
    const tr = el("tr", { "data-job": String(job.id) },
      el("td", {}, el("a", { href: `/jobs/${job.id}` }, String(job.id))),
      el("td", {}, el("a", { href: `/jobs/${job.id}` }, job.name)),
      el("td", {}, job.pipeline ? `${job.pipeline.name} v${job.pipeline.version}` : "—"),
      el("td", { class: "status" }, badge(job.status)),
      el("td", { class: "progress" }, bar(job.progress.summary.progress, `Progress of job ${job.id}`)),
      el("td", { class: "counts" }, `${job.completed} / ${job.failed} / ${job.total}`),
      el("td", {}, when(job.created_at)),
      el("td", { class: "elapsed" }, ms(job.elapsed_time_ms)));
    return tr;
  }

  async function load(url) {
    state.url = url;
    try {
      const page = await api(url);
      rows.clear();
      tbody.replaceChildren(...page.results.map((job) => { const tr = renderRow(job); rows.set(job.id, tr); return tr; }));
      if (!page.results.length) tbody.append(el("tr", {}, el("td", { colspan: "8" }, "No jobs match.")));
      $("#count").textContent = `${page.count} job${page.count === 1 ? "" : "s"}`;
      for (const [id, link] of [["#next", page.next], ["#prev", page.previous]]) {
        const button = $(id);
        button.disabled = !link;
        button.dataset.url = link ? link.replace(/^https?:\/\/[^/]+/, "") : "";
      }
      flash("");
    } catch (error) { flash(`Could not load jobs: ${error.message}`); }
  }

  $("#filters").addEventListener("submit", (event) => { event.preventDefault(); load(query()); });
  $("#next").addEventListener("click", () => load($("#next").dataset.url));
  $("#prev").addEventListener("click", () => load($("#prev").dataset.url));
  for (const button of document.querySelectorAll("button.sort")) {
    button.addEventListener("click", () => {
      const field = button.dataset.order;
      state.ordering = state.ordering === `-${field}` ? field : `-${field}`;
      for (const other of document.querySelectorAll("button.sort")) other.removeAttribute("aria-sort");
      button.setAttribute("aria-sort", state.ordering.startsWith("-") ? "descending" : "ascending");
      load(query());
    });
  }
  load(query());
  document.addEventListener("conveyor:project", () => load(query()));

  // Live: one stream for every job the key sees; visible rows are updated in place.
  const source = new EventSource("/api/v2/events/");
  source.addEventListener("job", (event) => {
    const job = JSON.parse(event.data);
    const old = rows.get(job.id);
    if (!old) return;
    const fresh = renderRow(job);
    old.replaceWith(fresh);
    rows.set(job.id, fresh);
  });
}

// -------------------------------------------------------------------- job
function initJob() {
  const id = document.body.dataset.jobId;
  const base = `/api/v2/jobs/${id}/`;
  let current = null;
  let lastLog = 0;
  let itemsNext = null;

  function field(dl, name, value) { dl.append(el("div", {}, el("dt", {}, name), el("dd", {}, value ?? "—"))); }

  function renderJob(job) {
    current = job;
    document.title = `${job.name} · Conveyor`;
    $("#job-title").textContent = `${job.name} (#${job.id})`;
    $("#job-status").replaceChildren(badge(job.status));
    $("#summary").replaceChildren(el("p", {}, `Overall: ${pct(job.progress.summary.progress)}`),
      bar(job.progress.summary.progress, "Overall progress"));
    $("#stages").replaceChildren(...job.progress.stages.map(stageRow));
    const counters = $("#counters");
    counters.replaceChildren();
    for (const name of ["total", "pending", "completed", "failed", "canceled"]) field(counters, name, String(job[name]));
    const dl = $("#fields");
    dl.replaceChildren();
    field(dl, "Job identifier", job.job_identifier);
    field(dl, "Pipeline", job.pipeline ? `${job.pipeline.name} (${job.pipeline.slug}) v${job.pipeline.version}${job.pipeline.version_name ? " " + job.pipeline.version_name : ""}` : "—");
    field(dl, "Project", job.project.name);
    field(dl, "Job type", job.job_type.name);
    field(dl, "Submitted by", job.submitted_by);
    field(dl, "Created", when(job.created_at));
    field(dl, "Submitted", when(job.submitted_at));
    field(dl, "Started", when(job.started_at));
    field(dl, "Finished", when(job.finished_at));
    field(dl, "Queue time", ms(job.queue_time_ms));
    field(dl, "Elapsed time", ms(job.elapsed_time_ms));
    field(dl, "Timeout", job.timeout ? ms(job.timeout) : "none");
    field(dl, "Input bytes", bytes(job.input_byte_amount));
    field(dl, "Delay", `${job.delay} s`);
    field(dl, "Limit / shuffle", `${job.limit ?? "—"} / ${job.shuffle ? "yes" : "no"}`);
    field(dl, "Explain", job.explain ? "yes" : "no");
    field(dl, "Max failed ratio", String(job.max_failed_ratio));
    field(dl, "Dispatch", job.dispatch_mode);
    field(dl, "Config", JSON.stringify(job.config));
    renderOutput(job.output);
    renderActions(job);
  }

  function param(stage, name) { const p = stage.params.find((x) => x.name === name); return p ? p.value : null; }

  // The collect stage (S3 prefixes, manifests at an address) has no known length while it lists:
  // it shows the entries listed so far, and the item total grows with them.
  function stageRow(s) {
    const row = el("div", { class: "stage", "data-stage": s.key },
      el("span", { class: "stage-name" }, `${s.name} — ${s.status}`), bar(s.progress, `Stage ${s.name}`));
    if (s.key === "collect") {
      const listed = Number(param(s, "entries_listed") || 0);
      const listing = s.status === "CREATED" || s.status === "STARTED";
      row.append(el("div", { class: "hint collect-detail", "aria-live": "polite" },
        `${listed.toLocaleString()} entries listed${listing ? " so far (total grows while listing)" : ""}` +
        ` from ${param(s, "sources")} source(s), ${bytes(Number(param(s, "bytes_declared") || 0))} declared`));
    }
    return row;
  }

  // Results written to object storage as sharded JSONL (absent: the job names no output).
  function renderOutput(output) {
    $("#output-card").hidden = !output;
    if (!output) return;
    const dl = $("#output");
    dl.replaceChildren();
    field(dl, "URI", output.uri);
    field(dl, "Shards", String(output.shards ?? 0));
    field(dl, "Items written", String(output.items ?? 0));
    field(dl, "Bytes", bytes(Number(output.bytes || 0)));
    if (output.manifest) field(dl, "Manifest", output.manifest);
  }

  function renderActions(job) {
    const box = $("#job-actions");
    box.replaceChildren();
    if (!canWrite(job)) return;  // viewer keys: no actions at all
    const s = job.status;
    const actions = [
      ["run", "Run", s === "CREATED"],
      ["cancel", "Cancel", s === "CREATED" || RUNNING.has(s)],
      ["retry", "Retry failed", TERMINAL.has(s) && job.failed > 0],
      ["delete", "Delete", TERMINAL.has(s) || s === "CREATED"],
    ];
    for (const [action, label, enabled] of actions) {
      const button = el("button", { type: "button", "data-action": action, disabled: !enabled, class: action === "delete" ? "danger" : "" }, label);
      button.addEventListener("click", () => act(action, label));
      box.append(button);
    }
  }

  async function act(action, label) {
    if (!confirm(`${label} job #${id} "${current.name}"?`)) return;
    try {
      if (action === "delete") { await api(base, { method: "DELETE" }); location.href = "/"; return; }
      renderJob(await api(`${base}${action}/`, { method: "POST" }));
      if (action === "retry") loadItems(true);
    } catch (error) { flash(`${label} failed: ${error.message}`); }
  }

  function appendLog(line) {
    const pre = $("#log");
    const follow = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 20;
    pre.append(`${line}\n`);
    if (follow) pre.scrollTop = pre.scrollHeight;
  }

  function itemRow(item) {
    const detail = item.error ? el("span", { class: "error" }, item.error) : (item.result ? JSON.stringify(item.result) : "");
    return el("tr", {}, el("td", {}, String(item.seq)), el("td", {}, item.name),
      el("td", { class: "source" }, item.source || "—"), el("td", {}, item.kind),
      el("td", {}, badge(item.status)), el("td", {}, String(item.attempts)), el("td", {}, ms(item.duration_ms)),
      el("td", { class: "result" }, detail));
  }

  async function loadItems(reset) {
    const tbody = $("#items tbody");
    let url = itemsNext;
    if (reset) {
      const status = $("#item-status").value;
      url = `${base}items/?limit=100${status ? `&status=${status}` : ""}`;
      tbody.replaceChildren();
    }
    const page = await api(url.replace(/^https?:\/\/[^/]+/, ""));
    tbody.append(...page.results.map(itemRow));
    itemsNext = page.next;
    $("#items-more").hidden = !page.next;
  }

  // ----------------------------------------------------- results gallery (image classifiers)
  let galleryNext = null;

  function score(value) { return typeof value === "number" ? `${(value * 100).toFixed(1)} %` : ""; }

  function tile(item) {
    const failed = item.status === "FAILURE";
    const result = item.result && typeof item.result === "object" ? item.result : {};
    const frame = el("div", { class: "thumb" });
    const img = el("img", { alt: `Sample of ${item.name}`, width: "96", height: "96", decoding: "async" });
    frame.append(img);
    imageBlob(`${base}items/${item.id}/sample`).then((url) => { img.src = url; })
      .catch(() => { img.replaceWith(el("span", { class: "no-sample" }, "no thumbnail")); });
    const caption = el("figcaption", {}, el("span", { class: "item-name" }, item.name));
    if (failed) {
      caption.append(el("span", { class: "item-label error" }, `Failed: ${item.error || "error"}`));
    } else if (item.status === "SUCCESS") {
      caption.append(el("span", { class: "item-label" }, String(result.label ?? "—")),
        el("span", { class: "item-score" }, score(result.score)));
    } else {
      caption.append(badge(item.status));
    }
    const figure = el("figure", {}, frame, caption);
    if (current && current.explain && result.explanation) {
      const toggle = el("button", { type: "button", class: "toggle", "aria-pressed": "false" }, "Show saliency map");
      let overlay = null;
      toggle.addEventListener("click", async () => {
        const on = toggle.getAttribute("aria-pressed") !== "true";
        if (on && !overlay) {
          try {
            overlay = el("img", { class: "overlay", alt: `Saliency map of ${item.name} (brighter = more important)`,
              src: await imageBlob(`${base}items/${item.id}/explanation`) });
            frame.append(overlay);
          } catch (error) { flash(`No saliency map for ${item.name}: ${error.message}`); return; }
        }
        overlay.hidden = !on;
        toggle.setAttribute("aria-pressed", String(on));
        toggle.textContent = on ? "Hide saliency map" : "Show saliency map";
      });
      caption.append(toggle);
    }
    return el("li", { class: failed ? "tile failed" : "tile", "data-item": String(item.id) }, figure);
  }

  async function loadGallery(reset) {
    if (!current || !current.image_classification_model) return;
    $("#gallery-card").hidden = false;
    const list = $("#gallery");
    let url = galleryNext;
    if (reset) { url = `${base}items/?limit=100`; list.replaceChildren(); }
    const page = await api(url.replace(/^https?:\/\/[^/]+/, ""));
    list.append(...page.results.map(tile));
    galleryNext = page.next;
    $("#gallery-more").hidden = !page.next;
  }

  async function start() {
    try {
      renderJob(await api(base));
    } catch (error) { flash(`Could not load job #${id}: ${error.message}`); return; }
    const logs = await api(`${base}logs/?limit=1000`);
    for (const row of logs.results) appendLog(row.line);
    lastLog = logs.last_id;
    loadItems(true);
    loadGallery(true);
    const source = new EventSource(`${base}events/`);
    source.addEventListener("job", (event) => {
      const job = JSON.parse(event.data);
      const wasTerminal = current && TERMINAL.has(current.status);
      renderJob(job);
      if (TERMINAL.has(job.status) && !wasTerminal) { loadItems(true); loadGallery(true); }
    });
    source.addEventListener("log", (event) => {
      const row = JSON.parse(event.data);
      if (row.id > lastLog) { lastLog = row.id; appendLog(row.line); }
    });
  }

  $("#item-status").addEventListener("change", () => loadItems(true));
  $("#items-more").addEventListener("click", () => loadItems(false));
  $("#gallery-more").addEventListener("click", () => loadGallery(false));
  start();
}

// ----------------------------------------------------------------- submit
function initSubmit() {
  const select = $("#s-pipeline");
  let pipelines = [];

  function describe() {
    const p = pipelines.find((x) => String(x.id) === select.value);
    if (!p) return;
    $("#pipeline-info").replaceChildren(el("p", {}, p.description),
      el("p", {}, `Version ${p.version}${p.version_name ? " (" + p.version_name + ")" : ""} · accepts ${p.input_kinds.join(", ")} · batch ${p.batch_size}${p.supports_explain ? " · explain" : ""}`));
    $("#s-explain").disabled = !p.supports_explain;
  }

  projects().then((list) => {
    const writable = list.filter((p) => (p.user_permissions || []).includes("submit"));
    if (!writable.length) {
      $("#submit-form").hidden = true;
      $("#submit-denied").hidden = false;
      return;
    }
    const projectSelect = $("#s-project");
    projectSelect.replaceChildren(...writable.map((p) => el("option", { value: String(p.id) }, p.name || p.slug)));
    if (writable.some((p) => String(p.id) === currentProject())) projectSelect.value = currentProject();
    loadCollections();
  });
  document.addEventListener("conveyor:project", (event) => {
    const projectSelect = $("#s-project");
    if ([...projectSelect.options].some((o) => o.value === event.detail)) projectSelect.value = event.detail;
    loadCollections();
  });
  $("#s-project").addEventListener("change", loadCollections);

  // The collections of the chosen project (a job runs in its collection's project).
  async function loadCollections() {
    const project = $("#s-project").value;
    const none = el("option", { value: "" }, "none: use the texts and files above");
    try {
      const page = await api(`/api/v2/collections/?limit=1000${project ? "&project=" + encodeURIComponent(project) : ""}`);
      $("#s-collection").replaceChildren(none, ...page.results.map((c) =>
        el("option", { value: String(c.id) }, `${c.name} (${c.item_count} items)`)));
    } catch (error) { flash(`Could not load collections: ${error.message}`); }
  }

  api("/api/v2/pipelines/").then((list) => {
    pipelines = list;
    select.replaceChildren(...list.map((p) => el("option", { value: String(p.id) }, `${p.name} (${p.slug}) v${p.version}`)));
    describe();
  });
  select.addEventListener("change", describe);

  function readBase64(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  $("#submit-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const inputs = $("#s-texts").value.split("\n").map((t) => t.trim()).filter(Boolean)
      .map((text, i) => ({ name: `text-${i}`, kind: "text", data: text }));
    for (const file of $("#s-files").files) inputs.push({ name: file.name, kind: "base64", data: await readBase64(file) });
    let config;
    try { config = JSON.parse($("#s-config").value || "{}"); } catch (_) { flash("Pipeline config is not valid JSON."); return; }
    for (const address of $("#s-refs").value.split("\n").map((t) => t.trim()).filter(Boolean)) {
      if (!/^(https?|s3):\/\//.test(address)) { flash(`Not an http(s):// or s3:// address: ${address}`); return; }
      inputs.push({ kind: address.startsWith("s3://") ? "s3" : "url", data: address });
    }
    const manifest = $("#s-manifest").value.trim();
    if (manifest) {
      inputs.push({ kind: "manifest", data: manifest, ...($("#s-manifest-format").value ? { format: $("#s-manifest-format").value } : {}) });
    }
    const collection = $("#s-collection").value;
    if (collection && inputs.length) { flash("Choose either a collection or the inputs above, not both."); return; }
    const output = $("#s-output").value.trim();
    const body = {
      name: $("#s-name").value.trim(),
      pipeline_id: Number(select.value),
      project_id: $("#s-project").value ? Number($("#s-project").value) : null,
      ...(collection
        ? { collection_id: Number(collection), method: $("#s-method").value,
          limit: $("#s-limit").value ? Number($("#s-limit").value) : null }
        : { inputs }),
      delay: Number($("#s-delay").value || 0),
      timeout: $("#s-timeout").value ? Number($("#s-timeout").value) : null,
      explain: $("#s-explain").checked,
      max_failed_ratio: Number($("#s-ratio").value),
      config,
      // Sent only when they differ from the server's defaults.
      ...($("#s-fetch").value !== "by_reference" ? { fetch: $("#s-fetch").value } : {}),
      ...(output ? { output: { uri: output } } : {}),
    };
    try {
      const job = await api(`/api/v2/jobs/?start_now=${$("#s-start").checked}`, { method: "POST", body: JSON.stringify(body) });
      location.href = `/jobs/${job.id}`;
    } catch (error) { flash(`Not submitted: ${error.message}`); }
  });
}

// ------------------------------------------------------------------- keys
function initKeys() {
  const tbody = $("#keys tbody");

  function row(k) {
    const mine = k.prefix === (key() || "").split(".")[0];
    const cells = [el("td", {}, el("code", {}, k.prefix)), el("td", {}, k.name, mine ? el("em", {}, " (this key)") : ""), el("td", {}, k.role),
      el("td", {}, k.project || "every project"), el("td", {}, when(k.created_at)),
      el("td", {}, when(k.last_used_at)), el("td", {}, k.expires_at ? when(k.expires_at) : "never")];
    const actions = el("td", {});
    if (k.revoked_at) {
      actions.append(el("span", { class: "badge s-REVOKED" }, `revoked ${when(k.revoked_at)}`));
    } else {
      const button = el("button", { type: "button", class: "danger", "aria-label": `Revoke key ${k.prefix} (${k.name})` }, "Revoke");
      button.addEventListener("click", async () => {
        const warning = mine ? " This is the key you are signed in with." : "";
        if (!confirm(`Revoke key ${k.prefix} "${k.name}"? Anything using it stops working.${warning}`)) return;
        try { await api(`/api/v2/keys/${encodeURIComponent(k.prefix)}/`, { method: "DELETE" }); load(); flash(""); }
        catch (error) { flash(`Not revoked: ${error.message}`); }
      });
      actions.append(button);
    }
    return el("tr", { "data-key": k.prefix }, ...cells, actions);
  }

  async function load() {
    try {
      const list = await api("/api/v2/keys/");
      $("#keys-owner").hidden = false;
      tbody.replaceChildren(...list.map(row));
    } catch (error) {
      if (error.status === 403) { $("#keys-denied").hidden = false; return; }
      flash(`Could not load keys: ${error.message}`);
    }
  }

  projects().then((list) => {
    $("#k-project").append(...list.map((p) => el("option", { value: p.slug }, p.name || p.slug)));
  }).catch(() => {});

  $("#key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const days = $("#k-expires").value;
    const body = { name: $("#k-name").value.trim(), role: $("#k-role").value,
      project: $("#k-project").value || null, expires_in_days: days ? Number(days) : null };
    try {
      const created = await api("/api/v2/keys/", { method: "POST", body: JSON.stringify(body) });
      $("#new-key-value").value = created.key;
      $("#new-key").hidden = false;
      $("#key-form").reset();
      flash("");
      load();
    } catch (error) { flash(`Not created: ${error.message}`); }
  });
  load();
}

// -------------------------------------------------------------- pipelines
function initPipelines() {
  function loadPipelines() {
    api("/api/v2/pipelines/").then((list) => {
      $("#pipelines tbody").replaceChildren(...list.map((p) => el("tr", {},
        el("td", {}, p.name), el("td", {}, el("code", {}, p.slug)), el("td", {}, `${p.version}${p.version_name ? " " + p.version_name : ""}`),
        el("td", {}, p.description), el("td", {}, p.input_kinds.join(", ")),
        el("td", {}, p.stages.map((s) => s.name).join(" → ")), el("td", {}, String(p.batch_size)),
        el("td", {}, p.supports_explain ? "yes" : "no"))));
    });
  }
  let owner = false;

  function health(s) {
    const [label, status] = s.ready ? ["ready", "SUCCESS"] : s.live ? ["live, not ready", "STARTED"] : ["down", "FAILURE"];
    return el("span", { class: `badge s-${status}`, title: s.last_error || "" }, label);
  }

  function serviceRow(s) {
    const actions = el("td", {});
    if (owner) {
      const check = el("button", { type: "button", "aria-label": `Check service ${s.name}` }, "Check");
      check.addEventListener("click", async () => {
        try { await api(`/api/v2/processing-services/${s.id}/refresh/`, { method: "POST" }); flash(""); loadServices(); loadPipelines(); }
        catch (error) { flash(`Not checked: ${error.message}`); }
      });
      const remove = el("button", { type: "button", class: "danger", "aria-label": `Remove service ${s.name}` }, "Remove");
      remove.addEventListener("click", async () => {
        if (!confirm(`Remove processing service ${s.name}? Its pipelines take no new jobs.`)) return;
        try { await api(`/api/v2/processing-services/${s.id}/`, { method: "DELETE" }); flash(""); loadServices(); loadPipelines(); }
        catch (error) { flash(`Not removed: ${error.message}`); }
      });
      actions.append(check, " ", remove);
    }
    return el("tr", { "data-service": s.name },
      el("td", {}, s.name), el("td", {}, el("code", {}, s.endpoint_url)),
      el("td", {}, health(s), s.last_error ? el("div", { class: "hint" }, s.last_error) : ""),
      el("td", {}, ...s.pipelines.map((p) => el("div", {}, el("code", {}, p.slug), ` v${p.version}`))),
      el("td", {}, when(s.last_checked_at)), actions);
  }

  async function loadServices() {
    try {
      const list = await api("/api/v2/processing-services/");
      $("#services tbody").replaceChildren(...list.map(serviceRow));
      $("#services-empty").hidden = list.length > 0;
    } catch (error) { flash(`Could not load processing services: ${error.message}`); }
  }

  $("#service-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { endpoint_url: $("#s-url").value.trim() };
    if ($("#s-name").value.trim()) body.name = $("#s-name").value.trim();
    try {
      await api("/api/v2/processing-services/", { method: "POST", body: JSON.stringify(body) });
      $("#service-form").reset();
      flash("");
      loadServices();
      loadPipelines();
    } catch (error) { flash(`Not registered: ${error.message}`); }
  });

  const WORKER_BADGE = { active: "STARTED", idle: "SUCCESS", lost: "FAILURE", stopped: "REVOKED" };
  function ago(iso) {
    const seconds = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
    if (seconds < 90) return `${seconds} s ago`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
    return when(iso);
  }

  function workerRow(w) {
    const state = el("span", { class: `badge s-${WORKER_BADGE[w.state] || "PENDING"}` }, w.state === "lost" ? "LOST" : w.state);
    const job = w.current_job_id ? el("a", { href: `/jobs/${w.current_job_id}` }, `#${w.current_job_id}`) : "—";
    return el("tr", { "data-worker": w.name, "data-state": w.state },
      el("td", {}, el("div", {}, w.name), el("div", { class: "hint" }, w.host)),
      el("td", {}, w.kind),
      el("td", { title: w.pipelines.join(", ") }, w.pipelines.length > 4 ? `${w.pipelines.slice(0, 4).join(", ")} +${w.pipelines.length - 4}` : w.pipelines.join(", ")),
      el("td", {}, state),
      el("td", { title: when(w.last_seen_at) }, ago(w.last_seen_at)),
      el("td", {}, job),
      el("td", {}, String(w.items_done)));
  }

  async function loadWorkers() {
    try {
      const list = await api("/api/v2/workers/");
      $("#workers tbody").replaceChildren(...list.map(workerRow));
      $("#workers-empty").hidden = list.length > 0;
    } catch (error) { flash(`Could not load workers: ${error.message}`); }
  }
  loadWorkers();
  setInterval(() => { if (!document.hidden) loadWorkers(); }, 5000);

  // Owner keys (those that manage a project) may register, check and remove services.
  projects().then((list) => {
    owner = list.some((p) => (p.user_permissions || []).includes("manage"));
    $("#service-add").hidden = !owner;
  }).catch(() => {}).finally(loadServices);
  loadPipelines();
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "login") { initLogin(); return; }
  if (!key()) { location.href = "/login"; return; }
  $("#logout")?.addEventListener("click", signOut);
  initHeader();
  ({ jobs: initJobs, job: initJob, submit: initSubmit, pipelines: initPipelines, keys: initKeys })[page]?.();
});
