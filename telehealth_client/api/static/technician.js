// The technician page of the agent's local API. No build step, no library, nothing fetched from
// elsewhere. The API token is asked for once and kept in this tab's sessionStorage only; every
// request carries it in the Authorization header, the event stream and the previews too (read with
// fetch streams: EventSource and <img> cannot send a header).
"use strict";

const TOKEN_KEY = "telehealth-api-token";
const QUALITY_WINDOW_MS = 5 * 60 * 1000;
const MAX_EVENT_LINES = 200;

const $ = (id) => document.getElementById(id);
const page = {
  token: sessionStorage.getItem(TOKEN_KEY),
  role: null,
  status: null,
  quality: [], // {at, level, fps, rttMs, kbps} per call-quality event, newest last
  watchers: new Map(), // "consultationId side" -> watchers
  previews: new Map(), // side -> AbortController of the stream this page reads
  streamAbort: null,
  lastEventId: null,
  refreshTimer: null,
  checkRoutes: new Set(), // the device-check routes this agent's OpenAPI document lists
  checkReads: Promise.resolve(), // the device-check reads, one after another
  snapshot: null, // {checkId, url}: the newest device check's camera snapshot, read once
};
window.technicianPage = page; // for tests and the curious: the page's live state

// -- the API -----------------------------------------------------------------------------------------

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${page.token}`, ...(options.headers ?? {}) };
  const response = await fetch(path, { ...options, headers, cache: "no-store" });
  if (response.status === 401) {
    forgetToken("The token was refused: enter it again.");
    throw new Unauthorized("unauthorized");
  }
  return response;
}

async function apiJson(path) {
  const response = await api(path);
  const body = await response.json().catch(() => null);
  return { status: response.status, body };
}

// -- the token ---------------------------------------------------------------------------------------

function forgetToken(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  page.token = null;
  page.streamAbort?.abort();
  for (const controller of page.previews.values()) controller.abort();
  page.previews.clear();
  $("main").hidden = true;
  $("forget").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
}

function askForToken() {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    page.token = token;
    $("token").value = "";
    void open();
  });
  $("forget").addEventListener("click", () => forgetToken());
}

async function open() {
  $("login").hidden = true;
  $("main").hidden = false;
  $("forget").hidden = false;
  try {
    await refreshStatus();
  } catch (error) {
    if (error instanceof Unauthorized) return;
    $("agent-status").textContent = `cannot reach the agent (${error.message})`;
  }
  void followEvents();
  quietly(refreshPreviews());
  quietly(discoverDeviceRoutes());
}

function quietly(promise) {
  // A request that fails (the agent stopping, the token refused) is shown elsewhere, never thrown.
  promise.catch(() => {});
}

// -- state, consultations, roster ------------------------------------------------------------------

function text(tag, content, className) {
  const element = document.createElement(tag);
  if (content !== undefined && content !== null) element.textContent = String(content);
  if (className) element.className = className;
  return element;
}

async function refreshStatus() {
  const { status, body } = await apiJson("/v1/status");
  if (status !== 200 || !body) return;
  page.status = body;
  page.role = body.role;
  $("identity").textContent = `${body.userId} (${body.role})`;
  $("role").textContent = body.role;
  $("agent-status").textContent = body.status;
  $("pubsub").textContent = body.pubsub;
  $("outbox").textContent = body.outboxBacklog ?? "-";
  $("token-expiring").textContent = body.tokenExpiringAt ?? "-";
  renderConsultations(body.consultations ?? []);
  quietly(refreshChat());
}

function scheduleRefresh() {
  // Many events come in bursts (a state change, its roster, the call): one refresh after them.
  if (page.refreshTimer !== null) return;
  page.refreshTimer = setTimeout(() => {
    page.refreshTimer = null;
    refreshStatus().catch(() => {});
  }, 150);
}

function renderConsultations(consultations) {
  const box = $("consultations");
  box.replaceChildren();
  if (consultations.length === 0) {
    box.append(text("p", "No consultation.", "muted"));
    return;
  }
  for (const c of consultations) {
    const item = document.createElement("div");
    item.className = "consultation";
    item.dataset.testid = "consultation";
    item.dataset.consultationId = c.consultationId;
    item.append(text("h3", c.consultationId));
    const facts = document.createElement("dl");
    facts.className = "facts";
    const fact = (name, value, testid) => {
      facts.append(text("dt", name));
      const dd = text("dd", value ?? "-");
      dd.dataset.testid = testid;
      facts.append(dd);
    };
    fact("State", c.state, "consultation-state");
    if (c.queuePosition !== null && c.queuePosition !== undefined) {
      fact("Queue", `#${c.queuePosition} (about ${c.estimatedWaitMinutes ?? "?"} min)`, "queue");
    }
    fact("Call", c.call ? `${c.call.status} (${c.call.phase}; ${c.call.media.join(", ") || "no media"})${mutedText(c.call.muted)}` : "none", "call-status");
    item.append(facts);
    const roster = document.createElement("ul");
    roster.className = "roster";
    roster.dataset.testid = "roster";
    for (const member of c.roster ?? []) {
      const li = text("li", `${member.userId}: ${member.role}, ${member.status}${member.present ? ", present" : ""}`);
      li.dataset.userId = member.userId;
      if (!member.present) li.classList.add("absent");
      roster.append(li);
    }
    item.append(text("strong", "Roster"), roster);
    box.append(item);
  }
}

// -- chat --------------------------------------------------------------------------------------------

async function refreshChat() {
  const consultations = page.status?.consultations ?? [];
  const list = $("chat");
  if (consultations.length === 0) {
    list.replaceChildren();
    return;
  }
  const path =
    page.role === "patient"
      ? "/v1/chat"
      : `/v1/consultations/${encodeURIComponent(consultations[0].consultationId)}/chat`;
  const { status, body } = await apiJson(path);
  if (status !== 200 || !body) return; // a nurse has no chat route; a consultation may be ending
  list.replaceChildren(
    ...body.messages.map((message) => {
      const li = document.createElement("li");
      li.dataset.messageId = message.id;
      li.append(text("span", `${message.senderId} (${message.senderRole})`, "sender"), text("span", message.text));
      li.title = `${message.status}${message.readBy.length ? `, read by ${message.readBy.join(", ")}` : ""}`;
      return li;
    }),
  );
  list.scrollTop = list.scrollHeight;
}

// -- the event stream (Server-Sent Events read with fetch) ------------------------------------------

async function followEvents() {
  let delay = 500;
  while (page.token) {
    const controller = new AbortController();
    page.streamAbort = controller;
    try {
      const headers = page.lastEventId === null ? {} : { "Last-Event-ID": String(page.lastEventId) };
      const response = await api("/v1/events", { headers, signal: controller.signal });
      if (response.status !== 200 || !response.body) throw new Error(`events: HTTP ${response.status}`);
      setStream("live", "live");
      delay = 500;
      await readServerSentEvents(response.body, onEvent);
    } catch (error) {
      if (error instanceof Unauthorized || controller.signal.aborted) return;
    }
    setStream("reconnecting", "down");
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 10000);
    scheduleRefresh(); // what changed while the stream was down
  }
}

function setStream(label, className) {
  const pill = $("stream");
  pill.textContent = label;
  pill.className = `pill ${className}`;
}

async function readServerSentEvents(body, handle) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const message = { id: null, event: "message", data: [] };
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue; // a comment: the keep-alive
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const fieldValue = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "id") message.id = fieldValue;
        else if (field === "event") message.event = fieldValue;
        else if (field === "data") message.data.push(fieldValue);
      }
      if (message.data.length === 0) continue;
      if (message.id !== null) page.lastEventId = message.id;
      let data;
      try {
        data = JSON.parse(message.data.join("\n"));
      } catch {
        continue;
      }
      handle(message.event, data);
    }
  }
}

function onEvent(kind, data) {
  logEvent(kind, data);
  switch (kind) {
    case "call-quality":
      page.quality.push({
        at: Date.now(),
        level: data.level,
        fps: data.fps,
        rttMs: data.rtt_ms,
        kbps: data.inbound_kbps,
      });
      drawQuality();
      break;
    case "preview-watched":
      page.watchers.set(`${data.consultation_id} ${data.preview}`, data.watchers);
      renderWatched();
      break;
    case "chat-message":
    case "chat-status":
    case "chat-read":
    case "chat-wiped":
      quietly(refreshChat());
      break;
    case "device-checked":
    case "device-check-finished":
      followCheck(data.check_id, data.check);
      scheduleRefresh();
      break;
    case "call-status":
    case "call-state":
      quietly(refreshPreviews());
      scheduleRefresh();
      break;
    default:
      scheduleRefresh();
  }
}

// What this end sends as silence or black frames (POST /v1/call/mute), after the call's status.
function mutedText(muted) {
  const parts = [muted && muted.audio && "microphone", muted && muted.video && "camera"].filter(Boolean);
  return parts.length ? `, muted: ${parts.join(", ")}` : "";
}

function logEvent(kind, data) {
  const list = $("events");
  const { kind: _kind, ...fields } = data;
  const summary = Object.entries(fields)
    .filter(([, value]) => value !== null && typeof value !== "object")
    .map(([key, value]) => `${key}=${value}`)
    .join(" ");
  const li = text("li", `${new Date().toLocaleTimeString()} ${kind} ${summary}`);
  li.dataset.kind = kind;
  list.prepend(li);
  while (list.children.length > MAX_EVENT_LINES) list.lastElementChild.remove();
}

// -- call quality chart (canvas, no library) --------------------------------------------------------

function drawQuality() {
  const canvas = $("quality");
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  const now = Date.now();
  const from = now - QUALITY_WINDOW_MS;
  // Keep the last sample before the window: the line starts at its value.
  while (page.quality.length > 1 && page.quality[1].at < from) page.quality.shift();
  context.clearRect(0, 0, width, height);
  const pad = { left: 28, right: 8, top: 8, bottom: 16 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const x = (at) => pad.left + ((Math.max(at, from) - from) / QUALITY_WINDOW_MS) * plotW;
  context.strokeStyle = "#e1e5ea";
  context.fillStyle = "#6b7785";
  context.font = "10px sans-serif";
  for (let level = 0; level <= 5; level++) {
    const y = pad.top + plotH - (level / 5) * plotH;
    context.beginPath();
    context.moveTo(pad.left, y);
    context.lineTo(width - pad.right, y);
    context.stroke();
    context.fillText(String(level), 8, y + 3);
  }
  context.fillText("-5 min", pad.left, height - 3);
  context.fillText("now", width - pad.right - 20, height - 3);
  const series = (value, max, color) => {
    if (page.quality.length === 0) return;
    context.strokeStyle = color;
    context.lineWidth = 2;
    context.beginPath();
    page.quality.forEach((sample, index) => {
      const v = Math.min(value(sample) ?? 0, max);
      const y = pad.top + plotH - (v / max) * plotH;
      const nextAt = index + 1 < page.quality.length ? page.quality[index + 1].at : now;
      if (index === 0) context.moveTo(x(sample.at), y);
      else context.lineTo(x(sample.at), y);
      context.lineTo(x(nextAt), y); // a level holds until the next sample (told on change)
    });
    context.stroke();
    context.lineWidth = 1;
  };
  series((s) => s.level, 5, "#1f6fb2"); // level 0-5 on the grid
  series((s) => s.fps, 30, "#2f8f4e"); // fps scaled to 30 at the top
  const last = page.quality.at(-1);
  $("quality-now").textContent = last
    ? `level ${last.level}/5, ${last.fps} fps, rtt ${last.rttMs ?? "?"} ms, ${last.kbps} kbps in (blue: level, green: fps/30)`
    : "No call quality reported yet.";
}

// -- previews (MJPEG read with fetch, drawn through blob URLs) ----------------------------------------

async function refreshPreviews() {
  const { status, body } = await apiJson("/v1/previews");
  if (status !== 200 || !body) return;
  page.watchers.clear(); // what the agent says now (events kept it live meanwhile)
  for (const watch of body.watched) page.watchers.set(`${watch.consultationId} ${watch.preview}`, watch.watchers);
  renderWatched();
  for (const side of ["local", "remote"]) {
    const note = document.querySelector(`[data-testid="note-${side}"]`);
    if (!page.previews.has(side)) note.textContent = body.available.length ? "call live" : "no call";
  }
}

function renderWatched() {
  for (const side of ["local", "remote"]) {
    let count = 0;
    for (const [key, watchers] of page.watchers) if (key.endsWith(` ${side}`)) count += watchers;
    const badge = document.querySelector(`[data-testid="watched-${side}"]`);
    badge.hidden = count === 0;
    badge.textContent = count === 1 ? "being watched" : `being watched (${count})`;
  }
}

function watchButtons() {
  for (const button of document.querySelectorAll("button.watch")) {
    button.addEventListener("click", () => {
      const side = button.dataset.side;
      if (page.previews.has(side)) stopPreview(side);
      else void startPreview(side);
    });
  }
}

function stopPreview(side) {
  page.previews.get(side)?.abort();
  page.previews.delete(side);
  document.querySelector(`button[data-side="${side}"]`).textContent = "Watch";
}

async function startPreview(side) {
  const controller = new AbortController();
  page.previews.set(side, controller);
  const button = document.querySelector(`button[data-side="${side}"]`);
  const note = document.querySelector(`[data-testid="note-${side}"]`);
  const image = $(`preview-${side}`);
  button.textContent = "Stop";
  note.textContent = "starting...";
  let frames = 0;
  try {
    const response = await api(`/v1/previews/${side}`, { signal: controller.signal });
    if (response.status !== 200 || !response.body) {
      const body = await response.json().catch(() => ({}));
      note.textContent = body.message ?? `HTTP ${response.status}`;
      return;
    }
    note.textContent = "waiting for a picture...";
    await readMultipartJpeg(response.body, (jpeg) => {
      frames += 1;
      const url = URL.createObjectURL(new Blob([jpeg], { type: "image/jpeg" }));
      const previous = image.src;
      image.onload = () => {
        if (previous.startsWith("blob:")) URL.revokeObjectURL(previous);
      };
      image.src = url;
      image.dataset.frames = String(frames);
      note.textContent = `${frames} pictures`;
    });
    note.textContent = "the call ended";
  } catch (error) {
    if (!controller.signal.aborted && !(error instanceof Unauthorized)) note.textContent = "stopped";
  } finally {
    if (page.previews.get(side) === controller) stopPreview(side);
  }
}

const CRLFCRLF = [13, 10, 13, 10];

function indexOf(bytes, pattern, from = 0) {
  outer: for (let i = from; i <= bytes.length - pattern.length; i++) {
    for (let j = 0; j < pattern.length; j++) if (bytes[i + j] !== pattern[j]) continue outer;
    return i;
  }
  return -1;
}

async function readMultipartJpeg(body, onImage) {
  // multipart/x-mixed-replace: "--boundary", headers with Content-Length, a blank line, the JPEG.
  const reader = body.getReader();
  let buffer = new Uint8Array(0);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const joined = new Uint8Array(buffer.length + value.length);
    joined.set(buffer);
    joined.set(value, buffer.length);
    buffer = joined;
    for (;;) {
      const headEnd = indexOf(buffer, CRLFCRLF);
      if (headEnd < 0) break;
      const head = new TextDecoder().decode(buffer.subarray(0, headEnd));
      const length = /content-length:\s*(\d+)/i.exec(head);
      if (!length) throw new Error("a preview part without Content-Length");
      const start = headEnd + 4;
      const end = start + Number(length[1]);
      if (buffer.length < end + 2) break;
      onImage(buffer.slice(start, end));
      buffer = buffer.slice(end + 2);
    }
  }
}

// -- device check and preflight ----------------------------------------------------------------------
// The newest device check and the newest preflight, each read by its ID from its own route
// (GET /v1/device-checks/{check_id}, GET /v1/preflight/{check_id}) when this agent's OpenAPI
// document lists it. The IDs come from GET /v1/status ("devices": whichever started last) and from
// the event stream (device-checked, device-check-finished), so a check started elsewhere shows as it
// runs. The camera snapshot (its every read is audited by the agent) is fetched once per check.

const CHECKS = {
  devices: { box: "device-check", what: "Device check", route: "/v1/device-checks/{check_id}" },
  preflight: { box: "preflight", what: "Preflight", route: "/v1/preflight/{check_id}" },
};
const SNAPSHOT_ROUTE = "/v1/device-checks/{check_id}/snapshot";
const checkPath = (route, checkId) => route.replace("{check_id}", encodeURIComponent(checkId));

async function discoverDeviceRoutes() {
  const { status, body } = await apiJson("/v1/openapi.json");
  if (status !== 200 || !body) return;
  const gets = new Set(Object.entries(body.paths ?? {}).filter(([, item]) => item.get).map(([path]) => path));
  page.checkRoutes = new Set([...Object.values(CHECKS).map((c) => c.route), SNAPSHOT_ROUTE].filter((r) => gets.has(r)));
  if (!Object.values(CHECKS).some((c) => page.checkRoutes.has(c.route))) {
    $("device-check").replaceChildren(text("p", "This agent has no device-check routes.", "muted"));
    return;
  }
  $("device-check").replaceChildren(text("p", "No device check yet.", "muted"));
  $("preflight").replaceChildren(text("p", "No preflight yet.", "muted"));
  const newest = page.status?.devices?.checkId;
  if (newest) followCheck(newest);
}

// Reads are queued: a burst of events never shows an older answer over a newer one.
function followCheck(checkId, kind) {
  if (page.checkRoutes.size === 0) return;
  page.checkReads = page.checkReads.then(() => showCheck(checkId, kind)).catch(() => {});
}

// The check's own route answers; without its kind (a status, a device-checked event) each is tried.
async function showCheck(checkId, kind) {
  for (const [each, { route }] of Object.entries(CHECKS)) {
    if ((kind && kind !== each) || !page.checkRoutes.has(route)) continue;
    const { status, body } = await apiJson(checkPath(route, checkId));
    if (status === 200 && body?.check) return renderCheck(body.check);
  }
}

function renderCheck(check) {
  const { box, what } = CHECKS[check.kind];
  const section = document.createElement("div");
  section.dataset.testid = `${check.kind}-check`;
  section.dataset.checkId = check.id;
  section.dataset.state = check.state;
  section.append(text("strong", `${what} ${check.id}: ${check.state}`));
  const verdicts = document.createElement("ul");
  verdicts.dataset.testid = "verdicts";
  for (const step of check.steps) {
    const reasons = step.reasons.length ? ` (${step.reasons.join("; ")})` : "";
    const li = text("li", `${step.kind}: ${step.status}${reasons}`);
    li.dataset.device = step.kind;
    li.dataset.status = step.status;
    verdicts.append(li);
  }
  for (const device of check.skip) {
    const li = text("li", `${device}: skipped`, "muted");
    li.dataset.device = device;
    li.dataset.status = "skipped";
    verdicts.append(li);
  }
  section.append(verdicts);
  if (check.network) {
    const network = text("p", `Network: ${check.network.verdict}${check.passed ? ", passed" : ", not passed"}`);
    network.dataset.testid = "network-verdict";
    section.append(network);
  }
  if (check.error) section.append(text("p", `Could not run: ${check.error}`, "muted"));
  const level = findField(check.report?.microphone, /level|rms|peak/i);
  if (typeof level === "number") section.append(...levelMeter(level));
  if (check.report) section.append(text("pre", JSON.stringify(check.report, null, 1).slice(0, 2000), "raw"));
  $(box).replaceChildren(section);
  if (check.kind === "devices" && check.snapshot) void showSnapshot(section, check.id);
}

function levelMeter(level) {
  const meter = document.createElement("div");
  meter.className = "meter";
  meter.title = `microphone level ${level}`;
  const fill = document.createElement("span");
  // dBFS (negative) from -60 to 0, or a 0-1 ratio
  const ratio = level <= 0 ? Math.max(0, (level + 60) / 60) : Math.min(1, level);
  fill.style.width = `${Math.round(ratio * 100)}%`;
  meter.append(fill);
  return [text("span", `Microphone level ${level}`), meter];
}

function findField(value, pattern, depth = 0) {
  if (!value || typeof value !== "object" || depth > 4) return undefined;
  for (const [key, inner] of Object.entries(value)) {
    if (pattern.test(key) && (typeof inner !== "object" || inner === null)) return inner;
  }
  for (const inner of Object.values(value)) {
    const found = findField(inner, pattern, depth + 1);
    if (found !== undefined) return found;
  }
  return undefined;
}

// One read per check: the picture is kept (as an object URL) until a newer check replaces it.
async function showSnapshot(section, checkId) {
  if (!page.checkRoutes.has(SNAPSHOT_ROUTE)) return;
  if (page.snapshot?.checkId !== checkId) {
    const response = await api(checkPath(SNAPSHOT_ROUTE, checkId));
    if (response.status !== 200) return;
    const url = URL.createObjectURL(await response.blob());
    if (page.snapshot) URL.revokeObjectURL(page.snapshot.url);
    page.snapshot = { checkId, url };
  }
  const image = document.createElement("img");
  image.className = "snapshot";
  image.alt = "camera snapshot";
  image.dataset.testid = "snapshot";
  image.src = page.snapshot.url;
  section.append(text("strong", "Camera snapshot"), image);
}

// -- start -------------------------------------------------------------------------------------------

askForToken();
watchButtons();
setInterval(drawQuality, 2000);
if (page.token) void open();
else forgetToken();
