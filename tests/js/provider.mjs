// A provider's browser app, written from PROTOCOL.md alone, on the real PubNub JavaScript SDK 12 in Node.
//
// It is what an integrator would build: a standing token fetched from the clinic backend over HTTP
// with the provider's device credential, the AES-256-CBC crypto module, its waiting room (with
// presence, live and from history) and its notification channel; each PATIENT_CHECKED_IN puts a
// patient in its queue and subscribes it to that consultation (with presence, caught up from
// history). The test clicks its buttons over stdin and reads what it saw on stdout. Reopened, the
// page rebuilds its queue from the waiting room's check-ins and early cancels only: it does not
// read back what it did itself before (the tests open it once per consultation).
//
// Configuration comes from the environment (never argv, which any local user can read with ps):
//   PEER_ORIGIN                relay "host:port" (plain HTTP)
//   PEER_PUBLISH_KEY, PEER_SUBSCRIBE_KEY, PEER_CIPHER_KEY
//   PEER_USER_ID               the provider's user ID
//   PEER_DEPARTMENT_ID         its department (the standing token request names it)
//   PEER_CLINIC_URL            the clinic backend, e.g. http://127.0.0.1:PORT
//   PEER_CLINIC_CREDENTIAL     the provider cart's device credential (Authorization: Bearer ...)
//   PEER_PAGE_ORIGIN           optional: the origin the page is served from (CORS, as a browser checks it)
//
// Commands arrive on stdin, one JSON object per line; "id" is echoed back on the answer:
//   {"op":"queueUpdate","minutesPerPatient":n?}  QUEUE_UPDATE to each waiting patient -> {sent}
//   {"op":"join","consultationId"}               PROVIDER_JOINED, then PROVIDER_READY to the patient
//   {"op":"start","consultationId"}              CONSULTATION_STARTED
//   {"op":"wrapUp","consultationId"}             WRAP_UP_STARTED
//   {"op":"end","consultationId","followUpRequired":bool}  CONSULTATION_ENDED with its summary
//   {"op":"chat","consultationId","text"}        a chat message to the patient -> {messageId, timetoken}
//   {"op":"chatRead","consultationId","upToId"?} chat-read up to a shown message (default: the newest)
//                                                -> {receiptId, upToId, timetoken}
//   {"op":"queue"}                               -> {queue: [{consultationId, patientId, state}]}
//   {"op":"quit"}
// Events go to stdout, one JSON object per line:
//   {"event":"ready","sdkVersion","userId","ttlMinutes","channels","pageOrigin"}  subscribed, history read
//   {"event":"fatal","stage","statusCode"?,"message"}    stage token, cors, subscribe or start; then exit 1
//   {"event":"status","category","operation","statusCode"?,"error"?,"channels"}
//   {"event":"message","channel","message","publisher","timetoken","error"?,"fromHistory"}  every one
//   {"event":"presence","channel","action","uuid","occupancy","timetoken"}
//   {"event":"checkedIn","consultationId","patientId","appointmentId","publisher","timetoken"}
//   {"event":"deviceStatus","consultationId","camera","microphone","speaker","network"}
//   {"event":"cancelled","consultationId","cancelledBy","reason","channel"}
//   {"event":"chat","consultationId","id","senderId","senderRole","text","sentAt","timetoken"}  once per id
//   {"event":"chatRead","consultationId","id","readerId","upToId","readAt","timetoken"}
//   {"event":"dropped","channel","field","reason"}  an incoming message the app refused (no values)
//   {"event":"result","id","op",...}   {"event":"error","id","op","field"?,"reason"?,"statusCode"?,"message"}
// Nothing here prints the token, keys, the credential, or anything but events for the test to read.

import { createInterface } from "node:readline";
import PubNub from "pubnub";

const env = process.env;
const required = (name) => {
  const value = env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
};

const userId = required("PEER_USER_ID");
const departmentId = required("PEER_DEPARTMENT_ID");
const clinicUrl = required("PEER_CLINIC_URL");
const clinicCredential = required("PEER_CLINIC_CREDENTIAL");
const pageOrigin = env.PEER_PAGE_ORIGIN || "http://127.0.0.1:8765"; // where the provider page is served

const pubnub = new PubNub({
  origin: required("PEER_ORIGIN"),
  ssl: false,
  publishKey: required("PEER_PUBLISH_KEY"),
  subscribeKey: required("PEER_SUBSCRIBE_KEY"),
  userId,
  cryptoModule: PubNub.CryptoModule.aesCbcCryptoModule({ cipherKey: required("PEER_CIPHER_KEY") }),
  heartbeatInterval: 30,
  presenceTimeout: 120,
});

const emit = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);

// -- the contract (PROTOCOL.md) --------------------------------------------------------------------

const ID = /^[A-Za-z0-9_-]{1,64}$/;
const UTC_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$/;
const VERDICTS = ["pass", "warn", "fail", "skipped"];
const NETWORK = ["video", "audio-only", "cannot-connect", "unknown"];
const CANCEL_REASONS = ["patient-left", "no-show", "provider-cancelled", "consent-revoked", "technical"];
const WAITING = ["checked-in", "waiting"];
const OPEN = [...WAITING, "connecting", "in-progress", "wrapping-up"]; // where chat goes both ways
const UUID4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const MAX_CHAT_CHARS = 4000;

// Senders write times as YYYY-MM-DDTHH:MM:SS.mmmZ: exactly what toISOString gives.
const now = () => new Date().toISOString();
const consultationOf = (patientId) => `consultation.${userId}.${patientId}`;
const notificationOf = (someone) => `notification.${someone}`;

class Refused extends Error {
  constructor(field, reason) {
    super(`${field}: ${reason}`);
    this.field = field;
    this.reason = reason;
  }
}

/** The first problem with a received message, as [field, reason], or null. */
function fieldProblem(message, checks) {
  if (typeof message !== "object" || message === null || Array.isArray(message)) {
    return ["payload", "must be a JSON object"];
  }
  for (const [field, valid, reason] of checks) {
    if (!valid(message[field])) return [field, reason];
  }
  return null;
}

/** The first problem with a received lifecycle message (they all carry a timestamp), or null. */
function problem(message, checks) {
  return fieldProblem(message, [["timestamp", isUtcTime, "must be an ISO-8601 UTC time"], ...checks]);
}

const isId = (value) => typeof value === "string" && ID.test(value);
const isUuid = (value) => typeof value === "string" && UUID4.test(value);
const isUtcTime = (value) => typeof value === "string" && UTC_TIME.test(value);
const oneOf = (values) => (value) => values.includes(value);
// PROTOCOL.md counts characters (code points), not JavaScript's UTF-16 units.
const chatTextProblem = (text) => {
  if (typeof text !== "string") return "must be a string";
  const length = [...text].length;
  if (length < 1 || length > MAX_CHAT_CHARS) return `must be 1-${MAX_CHAT_CHARS} characters, got ${length}`;
  if (!text.trim()) return "must not be blank";
  return null;
};

// -- the app's state -------------------------------------------------------------------------------

let channelConfig = null; // from the token answer: waitingRoom, notificationChannel, ...
// consultationId -> {consultationId, patientId, appointmentId, state, since (check-in timetoken), joinedAt,
//                   chat: Map chat id -> timetoken (BigInt) of every chat message shown, ours included,
//                   receipts: Set of chat-read ids handled}
const queue = new Map();
const seen = new Set(); // `${channel}/${timetoken}`: a message from history and live is handled once

// -- incoming --------------------------------------------------------------------------------------

function receive(channel, message, publisher, timetoken, error, fromHistory) {
  const key = `${channel}/${timetoken}`;
  if (seen.has(key)) return;
  seen.add(key);
  const raw = { event: "message", channel, message, publisher, timetoken, fromHistory };
  emit(error ? { ...raw, error } : raw);
  if (error || publisher === userId) return; // undecryptable, or our own
  if (channel === channelConfig.waitingRoom) {
    return waitingRoomMessage(channel, message, publisher, timetoken);
  }
  const patient = queue.get(channel); // a consultation channel is named by its consultation ID
  if (patient) consultationMessage(patient, channel, message, publisher, timetoken);
}

function drop(channel, [field, reason]) {
  emit({ event: "dropped", channel, field, reason });
}

function waitingRoomMessage(channel, message, publisher, timetoken) {
  if (message?.action === "PATIENT_CHECKED_IN") {
    const wrong = problem(message, [
      ["patientId", (v) => v === publisher, "must equal the publisher"],
      ["appointmentId", isId, "must be an ID"],
      ["consultationId", (v) => v === consultationOf(publisher), "must be this waiting room's consultation"],
    ]);
    if (wrong) return drop(channel, wrong);
    return checkedIn(message, publisher, timetoken);
  }
  if (message?.action === "CONSULTATION_CANCELLED") {
    // An early cancel names no consultation: it is its publisher's (a patient's) own.
    const patient = queue.get(consultationOf(publisher));
    if (patient) cancelled(patient, channel, message, publisher, timetoken);
    return;
  }
  drop(channel, ["action", "is not a waiting-room action"]);
}

function consultationMessage(patient, channel, message, publisher, timetoken) {
  if (BigInt(timetoken) <= patient.since) return; // an earlier visit's
  if (message?.action === "DEVICE_STATUS") {
    const wrong = problem(message, [
      ["camera", oneOf(VERDICTS), "must be pass, warn, fail or skipped"],
      ["microphone", oneOf(VERDICTS), "must be pass, warn, fail or skipped"],
      ["speaker", oneOf(VERDICTS), "must be pass, warn, fail or skipped"],
      ["network", oneOf(NETWORK), "must be video, audio-only, cannot-connect or unknown"],
    ]);
    if (wrong) return drop(channel, wrong);
    if (publisher !== patient.patientId) return drop(channel, ["publisher", "must be the patient"]);
    const { camera, microphone, speaker, network } = message;
    const { consultationId } = patient;
    emit({ event: "deviceStatus", consultationId, camera, microphone, speaker, network });
    return;
  }
  if (message?.action === "CONSULTATION_CANCELLED") {
    cancelled(patient, channel, message, publisher, timetoken);
    return;
  }
  if (message?.type === "chat") return chatMessage(patient, channel, message, publisher, timetoken);
  if (message?.type === "chat-read") return chatRead(patient, channel, message, publisher, timetoken);
}

// Chat (PROTOCOL.md "Chat"): each message once by its id (a retried publish keeps it), from a member
// of the consultation in its own role. This page is one to one with its patient.
const NOT_A_MEMBER = ["publisher", "is not a member of this consultation"];

function chatMessage(patient, channel, message, publisher, timetoken) {
  const wrong = fieldProblem(message, [
    ["id", isUuid, "must be a version-4 UUID"],
    ["senderId", (v) => v === publisher, "must equal the publisher"],
    ["text", (v) => chatTextProblem(v) === null, "must be 1-4000 characters, not blank"],
    ["sentAt", isUtcTime, "must be an ISO-8601 UTC time"],
  ]);
  if (wrong) return drop(channel, wrong);
  if (publisher !== patient.patientId) return drop(channel, NOT_A_MEMBER);
  if (message.senderRole !== "patient") {
    return drop(channel, ["senderRole", "does not match the sender's role in this consultation"]);
  }
  const { id, senderId, senderRole, text, sentAt } = message;
  if (patient.chat.has(id)) return;
  patient.chat.set(id, BigInt(timetoken));
  const { consultationId } = patient;
  emit({ event: "chat", consultationId, id, senderId, senderRole, text, sentAt, timetoken });
}

function chatRead(patient, channel, message, publisher, timetoken) {
  const wrong = fieldProblem(message, [
    ["id", isUuid, "must be a version-4 UUID"],
    ["readerId", (v) => v === publisher, "must equal the publisher"],
    ["upToId", (v) => patient.chat.has(v), "names no chat message of this consultation"],
    ["readAt", isUtcTime, "must be an ISO-8601 UTC time"],
  ]);
  if (wrong) return drop(channel, wrong);
  if (publisher !== patient.patientId) return drop(channel, NOT_A_MEMBER);
  const { id, readerId, upToId, readAt } = message;
  if (patient.receipts.has(id)) return;
  patient.receipts.add(id);
  const { consultationId } = patient;
  emit({ event: "chatRead", consultationId, id, readerId, upToId, readAt, timetoken });
}

function cancelled(patient, channel, message, publisher, timetoken) {
  const wrong = problem(message, [
    ["cancelledBy", (v) => v === publisher, "must equal the publisher"],
    ["reason", oneOf(CANCEL_REASONS), "is not a cancel reason"],
  ]);
  if (wrong) return drop(channel, wrong);
  if (BigInt(timetoken) <= patient.since) return;
  // The patient's early cancel travels on the consultation and the waiting room: act once.
  if (patient.state === "cancelled") return;
  patient.state = "cancelled";
  queue.delete(patient.consultationId);
  pubnub.unsubscribe({ channels: [patient.consultationId] });
  const { cancelledBy, reason } = message;
  emit({ event: "cancelled", consultationId: patient.consultationId, cancelledBy, reason, channel });
}

function checkedIn(message, publisher, timetoken) {
  const { consultationId, patientId, appointmentId } = message;
  if (queue.has(consultationId)) return;
  const since = BigInt(timetoken);
  const patient = {
    consultationId,
    patientId,
    appointmentId,
    state: "checked-in",
    since,
    chat: new Map(),
    receipts: new Set(),
  };
  queue.set(consultationId, patient);
  emit({ event: "checkedIn", consultationId, patientId, appointmentId, publisher, timetoken });
  // Its consultation from now on (device status, an early cancel); what was published before
  // this subscription is up comes from history.
  pubnub.subscribe({ channels: [consultationId], withPresence: true });
  void catchUp(consultationId);
}

async function catchUp(channel) {
  try {
    for (const item of await history(channel)) {
      receive(channel, item.message, item.uuid, item.timetoken, item.error, true);
    }
  } catch (error) {
    const statusCode = error?.status?.statusCode ?? null;
    emit({ event: "error", id: null, op: "history", statusCode, message: String(error?.message ?? error) });
  }
}

async function history(channel) {
  const answer = await pubnub.fetchMessages({ channels: [channel], count: 100 });
  const items = answer.channels[channel] ?? [];
  return items.map((item) => ({ ...item, error: item.error ? String(item.error) : undefined }));
}

pubnub.addListener({
  status: (s) =>
    emit({
      event: "status",
      category: s.category,
      operation: s.operation,
      statusCode: s.statusCode,
      error: s.error,
      channels: s.affectedChannels ?? s.subscribedChannels ?? [],
    }),
  message: (m) =>
    receive(m.channel, m.message, m.publisher, m.timetoken, m.error ? String(m.error) : undefined, false),
  presence: (p) =>
    emit({
      event: "presence",
      channel: p.channel,
      action: p.action,
      uuid: p.uuid,
      occupancy: p.occupancy,
      timetoken: p.timetoken,
    }),
});

// -- the provider's buttons ------------------------------------------------------------------------

function patientIn(consultationId, states) {
  if (typeof consultationId !== "string") throw new Refused("consultationId", "is required");
  const patient = queue.get(consultationId);
  if (!patient) throw new Refused("consultationId", "is not a consultation in this provider's queue");
  if (!states.includes(patient.state)) {
    throw new Refused("consultationId", `is ${patient.state}, not ${states.join(" or ")}`);
  }
  return patient;
}

async function publish(channel, message) {
  const answer = await pubnub.publish({ channel, message });
  return answer.timetoken;
}

async function lifecycle(patient, action, state, extra = {}) {
  const message = { action, providerId: userId, state, ...extra, timestamp: now() };
  const timetoken = await publish(patient.consultationId, message);
  patient.state = state;
  return { message, timetoken };
}

const commands = {
  queueUpdate: async ({ minutesPerPatient = 10 }) => {
    if (!Number.isInteger(minutesPerPatient) || minutesPerPatient < 0 || minutesPerPatient > 1440) {
      throw new Refused("minutesPerPatient", "must be a whole number of minutes from 0 to 1440");
    }
    const waiting = [...queue.values()]
      .filter((p) => WAITING.includes(p.state))
      .sort((a, b) => (a.since < b.since ? -1 : 1)); // check-in order
    const timetokens = [];
    for (const [index, patient] of waiting.entries()) {
      const position = index + 1;
      // To the patient's own notification channel: no patient may read who else is waiting.
      timetokens.push(
        await publish(notificationOf(patient.patientId), {
          type: "QUEUE_UPDATE",
          title: "Queue Update",
          body: `You are number ${position} in the queue.`,
          priority: "normal",
          consultationId: patient.consultationId,
          position,
          estimatedWaitMinutes: (position - 1) * minutesPerPatient,
          // No timestamp, as the seeds' provider app: PROTOCOL.md has receivers accept that.
        }),
      );
      patient.state = "waiting";
    }
    return { sent: waiting.length, timetokens };
  },
  join: async ({ consultationId }) => {
    const patient = patientIn(consultationId, WAITING);
    const joined = await lifecycle(patient, "PROVIDER_JOINED", "connecting");
    patient.joinedAt = Date.parse(joined.message.timestamp);
    const ready = await publish(notificationOf(patient.patientId), {
      type: "PROVIDER_READY",
      title: "Your Provider is Ready",
      body: "Your consultation is about to begin.",
      priority: "high",
      consultationId, // no timestamp, as the seeds' provider app sends it
    });
    return { timetoken: joined.timetoken, readyTimetoken: ready };
  },
  start: async ({ consultationId }) => {
    const patient = patientIn(consultationId, ["connecting"]);
    return { timetoken: (await lifecycle(patient, "CONSULTATION_STARTED", "in-progress")).timetoken };
  },
  wrapUp: async ({ consultationId }) => {
    const patient = patientIn(consultationId, ["connecting", "in-progress"]);
    return { timetoken: (await lifecycle(patient, "WRAP_UP_STARTED", "wrapping-up")).timetoken };
  },
  end: async ({ consultationId, followUpRequired }) => {
    const patient = patientIn(consultationId, ["connecting", "in-progress", "wrapping-up"]);
    if (typeof followUpRequired !== "boolean") throw new Refused("followUpRequired", "must be true or false");
    const endedAt = now();
    // Whole minutes from our PROVIDER_JOINED, rounded up, at least 1.
    const duration = Math.max(1, Math.ceil((Date.parse(endedAt) - patient.joinedAt) / 60_000));
    const summary = { duration, followUpRequired };
    const message = {
      action: "CONSULTATION_ENDED",
      providerId: userId,
      state: "completed",
      summary,
      timestamp: endedAt,
    };
    const timetoken = await publish(consultationId, message);
    queue.delete(consultationId);
    pubnub.unsubscribe({ channels: [consultationId] });
    return { timetoken, summary };
  },
  chat: async ({ consultationId, text }) => {
    const patient = patientIn(consultationId, OPEN);
    const wrong = chatTextProblem(text);
    if (wrong) throw new Refused("text", wrong);
    // The id is chosen before the publish and kept: a retried publish is shown once.
    const message = {
      type: "chat",
      id: crypto.randomUUID(),
      senderId: userId,
      senderRole: "provider",
      text,
      sentAt: now(),
    };
    const timetoken = await publish(consultationId, message);
    patient.chat.set(message.id, BigInt(timetoken));
    return { messageId: message.id, timetoken }; // "id" is the command's
  },
  chatRead: async ({ consultationId, upToId }) => {
    const patient = patientIn(consultationId, OPEN);
    let target = upToId;
    if (target === undefined) {
      // The newest message shown, from anyone: every one up to it in timetoken order is read.
      for (const [id, stamp] of patient.chat) {
        if (target === undefined || stamp > patient.chat.get(target)) target = id;
      }
      if (target === undefined) throw new Refused("upToId", "there is no chat message to acknowledge");
    } else if (!patient.chat.has(target)) {
      throw new Refused("upToId", "names no chat message of this consultation");
    }
    const message = {
      type: "chat-read",
      id: crypto.randomUUID(),
      readerId: userId,
      upToId: target,
      readAt: now(),
    };
    const timetoken = await publish(consultationId, message);
    return { receiptId: message.id, upToId: target, timetoken };
  },
  queue: () => ({
    queue: [...queue.values()].map(({ consultationId, patientId, state }) => ({
      consultationId,
      patientId,
      state,
    })),
  }),
  quit: () => {
    pubnub.destroy();
    process.exit(0);
  },
};

async function run(line) {
  let request;
  try {
    request = JSON.parse(line);
  } catch {
    emit({ event: "error", id: null, op: null, message: "command is not JSON" });
    return;
  }
  const { id = null, op } = request;
  const command = Object.hasOwn(commands, op) ? commands[op] : null;
  if (!command) {
    emit({ event: "error", id, op, field: "op", reason: "is not a known command", message: "unknown op" });
    return;
  }
  try {
    emit({ event: "result", id, op, ...(await command(request)) });
  } catch (error) {
    if (error instanceof Refused) {
      emit({ event: "error", id, op, field: error.field, reason: error.reason, message: error.message });
      return;
    }
    const status = error?.status ?? {};
    emit({
      event: "error",
      id,
      op,
      statusCode: status.statusCode ?? null,
      category: status.category ?? null,
      message: String(error?.message ?? error),
    });
  }
}

// -- start -----------------------------------------------------------------------------------------

function fatal(stage, message, statusCode) {
  emit({ event: "fatal", stage, message, ...(statusCode ? { statusCode } : {}) });
  pubnub.destroy();
  process.exit(1);
}

// Node's fetch ignores CORS; a browser does not. The page calls the clinic from another origin with
// an Authorization header and a JSON body, so the browser sends a preflight first and lets the page
// read an answer (a refusal included) only if it names the page's origin: do as the browser does.
const allowsPage = (answer) => ["*", pageOrigin].includes(answer.headers.get("access-control-allow-origin"));
const listed = (answer, header) =>
  (answer.headers.get(header) ?? "").split(",").map((item) => item.trim().toLowerCase());

async function browserFetch(url, { method, headers, body }) {
  const wanted = Object.keys(headers).map((name) => name.toLowerCase());
  const preflight = await fetch(url, {
    method: "OPTIONS",
    headers: {
      Origin: pageOrigin,
      "Access-Control-Request-Method": method,
      "Access-Control-Request-Headers": wanted.join(","),
    },
  });
  const headersAllowed = listed(preflight, "access-control-allow-headers");
  // A "*" never covers Authorization (Fetch standard): it must be named.
  const allowed = (name) =>
    headersAllowed.includes(name) || (headersAllowed.includes("*") && name !== "authorization");
  if (
    !preflight.ok ||
    !allowsPage(preflight) ||
    !listed(preflight, "access-control-allow-methods").includes(method.toLowerCase()) ||
    !wanted.every(allowed)
  ) {
    fatal("cors", "the browser would refuse the preflight");
  }
  const answer = await fetch(url, { method, headers: { ...headers, Origin: pageOrigin }, body });
  if (!allowsPage(answer)) fatal("cors", "the browser would hide the answer from the page");
  return answer;
}

async function standingToken() {
  // No consultation named: the provider's standing token (PROTOCOL.md, "Who calls what").
  const answer = await browserFetch(new URL("/api/telemedicine/token", clinicUrl), {
    method: "POST",
    headers: { Authorization: `Bearer ${clinicCredential}`, "Content-Type": "application/json" },
    body: JSON.stringify({ userId, role: "provider", departmentId }),
  });
  if (!answer.ok) fatal("token", "the clinic refused the standing token", answer.status);
  return answer.json();
}

function connected() {
  return new Promise((resolve, reject) => {
    const listener = {
      status: (s) => {
        if (s.category === "PNConnectedCategory") {
          pubnub.removeListener(listener);
          resolve();
        } else if (s.error || s.category === "PNAccessDeniedCategory") {
          pubnub.removeListener(listener);
          reject(new Error(`subscribe failed: ${s.error ?? s.category}`));
        }
      },
    };
    pubnub.addListener(listener);
  });
}

async function start() {
  const grant = await standingToken();
  pubnub.setToken(grant.token);
  channelConfig = grant.channelConfig;
  const channels = [channelConfig.waitingRoom, channelConfig.notificationChannel];
  const up = connected();
  pubnub.subscribe({ channels, withPresence: true });
  try {
    await up;
  } catch (error) {
    fatal("subscribe", String(error.message));
  }
  // Patients who checked in while this page was closed.
  for (const item of await history(channelConfig.waitingRoom)) {
    receive(channelConfig.waitingRoom, item.message, item.uuid, item.timetoken, item.error, true);
  }
  const { ttlMinutes } = grant;
  emit({ event: "ready", sdkVersion: pubnub.getVersion(), userId, ttlMinutes, channels, pageOrigin });
}

// The test owns this process: when its end of stdin closes, leave at once.
const input = createInterface({ input: process.stdin });
input.on("line", (line) => void run(line));
input.on("close", () => commands.quit());

start().catch((error) => fatal("start", String(error?.message ?? error), error?.status?.statusCode));
