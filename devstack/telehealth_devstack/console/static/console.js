// The provider console: what a provider app does with a patient kiosk, written from PROTOCOL.md on the
// PubNub JavaScript SDK (global `PubNub`) and, for the call, the shared call module (call.js,
// window.providerCall). Every channel is end-to-end encrypted with the AES-256-CBC crypto module.
//
// - Sign in: the development stack plays the provider app's backend (POST /dev/sign-in): keys, cipher
//   key, a standing Access Manager token, TURN credentials, and a session secret sent with every
//   later backend call (X-Console-Session). The token is refreshed before it expires.
// - Waiting room: `waiting-room.{me}` (live, and its history at sign-in) lists each PATIENT_CHECKED_IN
//   with its queue position (check-in order) and check-in time; the patient's consultation channel is
//   followed from then on (device status, an early cancel, chat). Queue updates go to each waiting
//   patient's own `notification.{patientId}`, never to the shared waiting room.
// - Per consultation: join (PROVIDER_JOINED, then PROVIDER_READY to the patient), the call (call.js:
//   offers, candidates, PROTOCOL's Recovery rules), CONSULTATION_STARTED when media first flows (or
//   without video), chat with read receipts, invite and remove a specialist (clinic first, then
//   PROVIDER_INVITED and CONSULTATION_INVITE; removal publishes PROVIDER_REMOVED before revoking),
//   escalate on `emergency.{departmentId}` and notify the on-call providers, resolve, wrap up, end
//   with the summary (every invited provider's access revoked with it).
// Nothing here writes a key, token, credential, SDP or chat text to the browser's console.

"use strict";

(() => {
  const ID = /^[A-Za-z0-9_-]{1,64}$/;
  const UUID4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
  const UTC_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$/;
  const VERDICTS = ["pass", "warn", "fail", "skipped"];
  const NETWORK = ["video", "audio-only", "cannot-connect", "unknown"];
  const CANCEL_REASONS = ["patient-left", "no-show", "provider-cancelled", "consent-revoked", "technical"];
  const WAITING = ["checked-in", "waiting"];
  const JOINED = ["connecting", "in-progress", "wrapping-up"];
  const OPEN = [...WAITING, ...JOINED];
  const TERMINAL = ["completed", "cancelled"];
  const MAX_CHAT_CHARS = 4000;
  const MAX_REASON_CHARS = 1000;
  const REFRESH_AT = 0.8; // of the token's TTL
  const HISTORY_COUNT = 100;

  // Senders write times as YYYY-MM-DDTHH:MM:SS.mmmZ: exactly what toISOString gives.
  const now = () => new Date().toISOString();
  const byTestId = (name, within = document) => within.querySelector(`[data-testid="${name}"]`);

  // The call module's refusal type: one type, so its refusals show their own message too.
  const { Refused } = window.providerCall;

  // -- the console's state -------------------------------------------------------------------------

  let me = null; // {userId, departmentId, providers, waitingRoom, notifications, emergency}
  let session = null; // sign-in's secret for this page's backend calls: memory only, never shown
  let pubnub = null;
  let refreshTimer = null;
  let selected = null; // the consultation ID on the right-hand panel
  // consultationId -> {consultationId, patientId, appointmentId, checkedInAt, since (BigInt), state,
  //   present, devices, joinedAt, chat: [{id, senderId, text, timetoken (BigInt), read}],
  //   readSent (chat id), invited: Map userId -> role, summary}
  const patients = new Map();
  const escalations = new Map(); // id -> {id, consultationId, severity, escalatedBy, status}
  const seen = new Set(); // `${channel}/${timetoken}`: history and live handled once

  // -- what the page shows -------------------------------------------------------------------------

  function showError(error) {
    const box = byTestId("error");
    box.textContent = error ? String(error.message ?? error) : "";
    box.hidden = !error;
  }

  // Runs a button's work; its refusal is shown, never thrown into the page.
  const act = (work) => async (event) => {
    event?.preventDefault();
    try {
      showError(null);
      await work();
    } catch (error) {
      showError(error instanceof Refused ? error : new Error(`${error?.name ?? "Error"}: the request failed`));
    } finally {
      render();
    }
  };

  const item = (attributes, ...children) => {
    const li = document.createElement("li");
    for (const [name, value] of Object.entries(attributes)) li.setAttribute(name, value);
    li.append(...children);
    return li;
  };
  const span = (testid, text, className) => {
    const element = document.createElement("span");
    if (testid) element.dataset.testid = testid;
    if (className) element.className = className;
    element.textContent = text;
    return element;
  };
  const button = (testid, text, onClick) => {
    const element = document.createElement("button");
    element.dataset.testid = testid;
    element.textContent = text;
    element.addEventListener("click", act(onClick));
    return element;
  };

  // Waiting patients in check-in order: position 1 is next.
  const waitingPatients = () =>
    [...patients.values()].filter((p) => WAITING.includes(p.state)).sort((a, b) => (a.since < b.since ? -1 : 1));

  function render() {
    if (!me) return;
    const list = byTestId("waiting-room");
    const shown = [...patients.values()].filter(
      (p) => !TERMINAL.includes(p.state) || p.consultationId === selected,
    );
    const positions = new Map(waitingPatients().map((p, index) => [p.consultationId, index + 1]));
    list.replaceChildren(
      ...shown
        .sort((a, b) => (a.since < b.since ? -1 : 1))
        .map((p) =>
          item(
            {
              "data-consultation-id": p.consultationId,
              "data-state": p.state,
              class: p.consultationId === selected ? "selected" : "",
            },
            span("waiting-patient", p.patientId),
            " ",
            span("queue-position", positions.has(p.consultationId) ? `#${positions.get(p.consultationId)}` : "",
              "meta"),
            " ",
            span("checked-in-at", `checked in ${new Date(p.checkedInAt).toLocaleTimeString()}`, "meta"),
            " ",
            span("waiting-state", p.state, "meta"),
            " ",
            button("open", "Open", () => select(p.consultationId)),
          ),
        ),
    );
    byTestId("waiting-empty").hidden = shown.length > 0;
    renderEscalations();
    renderConsultation();
  }

  function renderEscalations() {
    byTestId("escalations").replaceChildren(
      ...[...escalations.values()].map((e) =>
        item(
          { "data-escalation-id": e.id, "data-status": e.status },
          span("escalation", `${e.severity} · ${e.consultationId} · by ${e.escalatedBy} · ${e.status}`),
          " ",
          ...(e.status === "active" ? [button("resolve", "Resolve", () => resolve(e.id))] : []),
        ),
      ),
    );
  }

  function renderConsultation() {
    const panel = byTestId("consultation");
    const p = selected ? patients.get(selected) : null;
    panel.hidden = !p;
    if (!p) return;
    byTestId("patient").textContent = p.patientId;
    byTestId("consultation-state").textContent = p.state;
    byTestId("presence").textContent = p.present ? "present" : "absent";
    byTestId("devices").textContent = p.devices
      ? `camera ${p.devices.camera}, microphone ${p.devices.microphone}, ` +
        `speaker ${p.devices.speaker}, network ${p.devices.network}`
      : "not reported";
    byTestId("join").disabled = !WAITING.includes(p.state);
    byTestId("start-without-video").disabled = p.state !== "connecting";
    byTestId("wrap-up").disabled = !["connecting", "in-progress"].includes(p.state);
    byTestId("end").disabled = !JOINED.includes(p.state);
    const inCall = JOINED.includes(p.state);
    byTestId("call-start").disabled = !inCall;
    const summary = byTestId("summary");
    summary.hidden = !p.summary;
    if (p.summary) {
      const followUp = p.summary.followUpRequired ? "yes" : "no";
      summary.textContent = `Ended: ${p.summary.duration} min, follow-up required: ${followUp}`;
    }
    byTestId("chat").replaceChildren(
      ...p.chat.map((m) =>
        item(
          { "data-chat-id": m.id, "data-sender": m.senderId, "data-read": m.read ? "yes" : "no" },
          span(null, m.senderId === me.userId ? "you: " : `${m.senderId}: `, "meta"),
          span("chat-message-text", m.text),
          span(null, "", "receipt"),
        ),
      ),
    );
    const others = me.providers.filter(
      (provider) => provider.userId !== me.userId && !p.invited.has(provider.userId),
    );
    const invitee = document.getElementById("invitee");
    const choice = invitee.value;
    invitee.replaceChildren(
      ...others.map((provider) => new Option(`${provider.userId} (${provider.departmentId})`, provider.userId)),
    );
    if (others.some((provider) => provider.userId === choice)) invitee.value = choice;
    byTestId("invited").replaceChildren(
      ...[...p.invited].map(([userId, role]) =>
        item(
          { "data-user-id": userId },
          span("invited-provider", `${userId} (${role})`),
          " ",
          button("remove", "Remove", () => removeProvider(p, userId)),
        ),
      ),
    );
    markShownChatRead(p);
  }

  // -- the development backend (a real app's own backend) ------------------------------------------

  async function backend(path, body) {
    const answer = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...(session ? { "X-Console-Session": session } : {}) },
      body: JSON.stringify(body),
    });
    const found = await answer.json().catch(() => null);
    if (!answer.ok) {
      // The console's and the clinic's refusals alike name the field and the reason.
      throw new Refused(found?.field ?? path, found?.reason ?? `answered ${answer.status}`);
    }
    return found;
  }
  // The backend acts as the provider our session was opened for.
  const clinic = (call, body) => backend(`/dev/clinic/${call}`, { body });

  // -- publishing ----------------------------------------------------------------------------------

  async function publish(channel, message, extra = {}) {
    const answer = await pubnub.publish({ channel, message, ...extra });
    return BigInt(answer.timetoken);
  }

  async function lifecycle(p, action, state, fields = {}) {
    const message = { action, providerId: me.userId, state, ...fields, timestamp: now() };
    await publish(p.consultationId, message);
    p.state = state;
    return message;
  }

  function patientIn(consultationId, states) {
    const p = patients.get(consultationId);
    if (!p) throw new Refused("consultationId", "is not a consultation of this provider");
    if (!states.includes(p.state)) throw new Refused("state", `is ${p.state}, not ${states.join(" or ")}`);
    return p;
  }

  // -- sign in -------------------------------------------------------------------------------------

  async function signIn(userId) {
    const settings = await backend("/dev/sign-in", { userId });
    session = settings.session;
    pubnub = window.providerCall.client(settings); // the call module's: one configuration
    me = {
      userId: settings.userId,
      departmentId: settings.departmentId,
      providers: settings.providers,
      waitingRoom: `waiting-room.${settings.userId}`,
      notifications: `notification.${settings.userId}`,
      emergency: `emergency.${settings.departmentId}`,
    };
    pubnub.addListener({
      message: (m) => receive(m.channel, m.message, m.publisher, m.timetoken, Boolean(m.error), false),
      presence: (p) => onPresence(p),
    });
    await window.providerCall.use({
      pubnub,
      userId: me.userId,
      iceServers: settings.iceServers,
      onEvent: onCallEvent,
    });
    await subscribed([me.waitingRoom, me.notifications]);
    await subscribed([me.emergency], false); // its presence channel is not granted, nor needed
    scheduleRefresh(settings.ttlMinutes);
    document.getElementById("sign-in").hidden = true;
    document.getElementById("console").hidden = false;
    const identity = byTestId("identity");
    identity.textContent = `Signed in as ${me.userId} (department ${me.departmentId})`;
    identity.hidden = false;
    // Patients who checked in before the console opened, and escalations still open.
    for (const channel of [me.waitingRoom, me.emergency]) await catchUp(channel);
  }

  // The standing token is asked for again before it expires (PROTOCOL.md: provider 60 min).
  function scheduleRefresh(ttlMinutes) {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(
      act(async () => {
        const { userId, departmentId } = me;
        const grant = await clinic("token", { userId, role: "provider", departmentId });
        pubnub.setToken(grant.token);
        scheduleRefresh(grant.ttlMinutes);
      }),
      ttlMinutes * 60_000 * REFRESH_AT,
    );
  }

  // Until the subscription covers `channels` (and their presence, unless told not to).
  function subscribed(channels, withPresence = true) {
    return new Promise((resolve, reject) => {
      const listener = {
        status: (s) => {
          const covered = s.subscribedChannels ?? s.affectedChannels ?? [];
          // The first subscribe connects; later ones change the subscription.
          const up = ["PNConnectedCategory", "PNSubscriptionChangedCategory"].includes(s.category);
          if (up && channels.every((c) => covered.includes(c))) {
            pubnub.removeListener(listener);
            resolve();
          } else if (s.error && s.operation === "PNSubscribeOperation") {
            pubnub.removeListener(listener);
            reject(new Refused("subscribe", String(s.category)));
          }
        },
      };
      pubnub.addListener(listener);
      pubnub.subscribe({ channels, withPresence });
    });
  }

  async function catchUp(channel) {
    const answer = await pubnub.fetchMessages({ channels: [channel], count: HISTORY_COUNT });
    for (const entry of answer.channels[channel] ?? []) {
      receive(channel, entry.message, entry.uuid, entry.timetoken, Boolean(entry.error), true);
    }
    render();
  }

  // -- incoming ------------------------------------------------------------------------------------

  // A refused message is dropped (PROTOCOL.md): never a state change, never its content shown.
  function receive(channel, message, publisher, timetoken, undecryptable, fromHistory) {
    const key = `${channel}/${timetoken}`;
    if (seen.has(key) || undecryptable) return;
    seen.add(key);
    if (typeof message !== "object" || message === null || Array.isArray(message)) return;
    const stamp = BigInt(timetoken);
    if (channel === me.waitingRoom) waitingRoomMessage(message, publisher, stamp);
    else if (channel === me.emergency) emergencyMessage(message, publisher);
    else if (channel === me.notifications) notificationMessage(message);
    else if (patients.has(channel)) {
      consultationMessage(patients.get(channel), message, publisher, stamp, fromHistory);
    }
    if (!fromHistory) render();
  }

  const utc = (value) => typeof value === "string" && UTC_TIME.test(value);
  const consultationOf = (patientId) => `consultation.${me.userId}.${patientId}`;

  function waitingRoomMessage(message, publisher, stamp) {
    if (message.action === "PATIENT_CHECKED_IN") {
      const valid =
        message.patientId === publisher &&
        ID.test(publisher) &&
        typeof message.appointmentId === "string" &&
        ID.test(message.appointmentId) &&
        message.consultationId === consultationOf(publisher) &&
        utc(message.timestamp);
      if (valid) checkedIn(message, stamp);
      return;
    }
    // A patient who leaves before a provider joined cancels on the waiting room too.
    if (message.action === "CONSULTATION_CANCELLED") {
      const p = patients.get(consultationOf(publisher));
      if (p && stamp > p.since) cancelled(p, message, publisher);
    }
  }

  function checkedIn(message, stamp) {
    // A newer check-in on the same channel is the pair's next visit (the kiosk refuses a second
    // check-in while one runs): it replaces the older one, whose messages are then ignored.
    const known = patients.get(message.consultationId);
    if (known && known.since >= stamp) return;
    const p = {
      consultationId: message.consultationId,
      patientId: message.patientId,
      appointmentId: message.appointmentId,
      checkedInAt: message.timestamp,
      since: stamp,
      state: "checked-in",
      present: false,
      devices: null,
      joinedAt: null,
      chat: [],
      readSent: null,
      videoSubscribed: null, // a promise once the consultation and its `.video` are subscribed
      invited: new Map(),
      summary: null,
    };
    patients.set(p.consultationId, p);
    // Its consultation from now on; what came before this subscription comes from history. A
    // visit that history shows over is left; one still open asks who is there now.
    subscribed([p.consultationId])
      .then(() => catchUp(p.consultationId))
      .then(() => (TERMINAL.includes(p.state) ? pubnub.unsubscribe({ channels: [p.consultationId] }) : reopen(p)))
      .catch((error) => showError(error));
  }

  // A visit still open after a reload: who is there now, and, if history shows we joined it, its
  // calls followed again (`.video` has no history: a call is re-established, PROTOCOL.md Recovery).
  async function reopen(p) {
    if (JOINED.includes(p.state)) await followCalls(p);
    await present(p);
  }

  // The call module follows this consultation's `.video` (subscribed once, kept): subscribed first,
  // as the kiosk may answer or offer (a rebuild) as soon as it hears us.
  async function followCalls(p) {
    p.videoSubscribed ??= subscribed([p.consultationId, `${p.consultationId}.video`]).catch((error) => {
      p.videoSubscribed = null;
      throw error;
    });
    await p.videoSubscribed;
    await window.providerCall.follow({ consultationId: p.consultationId });
  }

  async function present(p) {
    const answer = await pubnub.hereNow({ channels: [p.consultationId], includeUUIDs: true });
    const occupants = answer.channels[p.consultationId]?.occupants ?? [];
    if (occupants.some((occupant) => occupant.uuid === p.patientId)) p.present = true;
    render();
  }

  function consultationMessage(p, message, publisher, stamp, fromHistory) {
    if (stamp <= p.since) return; // an earlier visit's
    if (message.type === "chat") return chatMessage(p, message, publisher, stamp);
    if (message.type === "chat-read") return chatRead(p, message, publisher);
    if (publisher === me.userId) {
      // Our own lifecycle, read back from history after a reload.
      if (fromHistory) ownLifecycle(p, message);
      return;
    }
    if (message.action === "DEVICE_STATUS" && publisher === p.patientId && utc(message.timestamp)) {
      const { camera, microphone, speaker, network } = message;
      const valid = [camera, microphone, speaker].every((v) => VERDICTS.includes(v)) && NETWORK.includes(network);
      if (valid) p.devices = { camera, microphone, speaker, network };
      return;
    }
    if (message.action === "CONSULTATION_CANCELLED") return cancelled(p, message, publisher);
  }

  function ownLifecycle(p, message) {
    const states = {
      PROVIDER_JOINED: "connecting",
      CONSULTATION_STARTED: "in-progress",
      WRAP_UP_STARTED: "wrapping-up",
      CONSULTATION_ENDED: "completed",
    };
    if (TERMINAL.includes(p.state)) return;
    if (message.action === "PROVIDER_INVITED") p.invited.set(message.invitedProviderId, message.role);
    if (message.action === "PROVIDER_REMOVED") p.invited.delete(message.providerId);
    const state = states[message.action];
    if (!state) return;
    p.state = state;
    if (message.action === "PROVIDER_JOINED") p.joinedAt = Date.parse(message.timestamp);
    if (message.action === "CONSULTATION_ENDED") p.summary = message.summary;
  }

  function cancelled(p, message, publisher) {
    const valid =
      message.cancelledBy === publisher && CANCEL_REASONS.includes(message.reason) && utc(message.timestamp);
    if (!valid || TERMINAL.includes(p.state) || publisher !== p.patientId) return;
    p.state = "cancelled";
    if (selected === p.consultationId) void window.providerCall.hangup().catch(() => {});
    pubnub.unsubscribe({ channels: [p.consultationId, `${p.consultationId}.video`] });
  }

  // Chat (PROTOCOL.md "Chat"): each message once by its id; ours come back from the SDK too.
  function chatMessage(p, message, publisher, stamp) {
    const text = message.text;
    const length = typeof text === "string" ? [...text].length : 0;
    const valid =
      typeof message.id === "string" &&
      UUID4.test(message.id) &&
      message.senderId === publisher &&
      length >= 1 &&
      length <= MAX_CHAT_CHARS &&
      utc(message.sentAt) &&
      (publisher === me.userId || publisher === p.patientId || p.invited.has(publisher));
    if (!valid || p.chat.some((m) => m.id === message.id)) return;
    p.chat.push({ id: message.id, senderId: publisher, text, timetoken: stamp, read: false });
    p.chat.sort((a, b) => (a.timetoken < b.timetoken ? -1 : 1));
  }

  // The patient read every chat message up to `upToId`, in timetoken order.
  function chatRead(p, message, publisher) {
    if (publisher !== p.patientId || message.readerId !== publisher || !utc(message.readAt)) return;
    const upTo = p.chat.find((m) => m.id === message.upToId);
    if (!upTo) return;
    for (const m of p.chat) if (m.timetoken <= upTo.timetoken && m.senderId !== publisher) m.read = true;
  }

  // A receipt for the newest message shown from someone else, once per newest message.
  function markShownChatRead(p) {
    const theirs = p.chat.filter((m) => m.senderId !== me.userId);
    const newest = theirs[theirs.length - 1];
    if (!newest || p.readSent === newest.id || !OPEN.includes(p.state)) return;
    p.readSent = newest.id;
    const receipt = {
      type: "chat-read",
      id: crypto.randomUUID(),
      readerId: me.userId,
      upToId: newest.id,
      readAt: now(),
    };
    publish(p.consultationId, receipt).catch((error) =>
      showError(new Error(`chat-read: ${error?.name ?? "Error"}`)),
    );
  }

  function emergencyMessage(message, publisher) {
    if (message.action === "EMERGENCY_ESCALATION") {
      const valid =
        UUID4.test(message.id ?? "") &&
        message.escalatedBy === publisher &&
        ["urgent", "critical", "life-threatening"].includes(message.severity) &&
        typeof message.consultationId === "string";
      if (valid && !escalations.has(message.id)) {
        const { id, consultationId, severity, escalatedBy } = message;
        escalations.set(id, { id, consultationId, severity, escalatedBy, status: "active" });
      }
    } else if (message.action === "EMERGENCY_RESOLVED") {
      const escalation = escalations.get(message.id);
      if (escalation && message.resolvedBy === publisher) escalation.status = "resolved";
    }
  }

  // Notifications are listed by kind and title only.
  function notificationMessage(message) {
    if (typeof message.type !== "string" || typeof message.title !== "string") return;
    byTestId("notifications").prepend(item({ "data-type": message.type }, `${message.type}: ${message.title}`));
  }

  function onPresence(event) {
    const p = patients.get(event.channel);
    if (!p || event.uuid !== p.patientId) return;
    if (event.action === "join") p.present = true;
    else if (event.action === "leave" || event.action === "timeout") p.present = false;
    render();
  }

  // The call module's events: the first decoded frame of a call starts the consultation.
  function onCallEvent(event) {
    if (event.event !== "media") return;
    const p = selected ? patients.get(selected) : null;
    if (p?.state !== "connecting") return;
    act(() => lifecycle(p, "CONSULTATION_STARTED", "in-progress"))();
  }

  // -- the provider's buttons ----------------------------------------------------------------------

  function select(consultationId) {
    selected = consultationId;
  }

  function current(states) {
    if (!selected) throw new Refused("consultation", "open one from the waiting room first");
    return patientIn(selected, states);
  }

  async function queueUpdates() {
    const minutes = Number(document.getElementById("minutes").value);
    if (!Number.isInteger(minutes) || minutes < 0 || minutes > 1440) {
      throw new Refused("minutesPerPatient", "must be a whole number of minutes from 0 to 1440");
    }
    for (const [index, p] of waitingPatients().entries()) {
      const position = index + 1;
      // To the patient's own notification channel: no patient may read who else is waiting.
      await publish(`notification.${p.patientId}`, {
        type: "QUEUE_UPDATE",
        title: "Queue update",
        body: position === 1 ? "You are next." : `You are number ${position} in the queue.`,
        priority: "normal",
        consultationId: p.consultationId,
        position,
        estimatedWaitMinutes: (position - 1) * minutes,
        timestamp: now(),
      });
      p.state = "waiting";
    }
  }

  async function join() {
    const p = current(WAITING);
    await followCalls(p);
    const joined = await lifecycle(p, "PROVIDER_JOINED", "connecting");
    p.joinedAt = Date.parse(joined.timestamp);
    await publish(`notification.${p.patientId}`, {
      type: "PROVIDER_READY",
      title: "Your provider is ready",
      body: "Your consultation is about to begin.",
      priority: "high",
      consultationId: p.consultationId,
      timestamp: now(),
    });
  }

  async function startWithoutVideo() {
    await lifecycle(current(["connecting"]), "CONSULTATION_STARTED", "in-progress");
  }

  async function wrapUp() {
    await lifecycle(current(["connecting", "in-progress"]), "WRAP_UP_STARTED", "wrapping-up");
  }

  async function end() {
    const p = current(JOINED);
    await window.providerCall.hangup().catch(() => {}); // no call under way is fine
    const timestamp = now();
    // Whole minutes from our PROVIDER_JOINED, rounded up, at least 1.
    const duration = Math.max(1, Math.ceil((Date.parse(timestamp) - (p.joinedAt ?? Date.now())) / 60_000));
    const summary = { duration, followUpRequired: byTestId("follow-up").checked };
    await lifecycle(p, "CONSULTATION_ENDED", "completed", { summary, timestamp });
    p.summary = summary;
    // Every invitation ends with the consultation: the channel is reused by the pair's next one.
    for (const userId of p.invited.keys()) {
      await clinic("revoke-access", { userId, consultationChannel: p.consultationId });
    }
    p.invited.clear();
    pubnub.unsubscribe({ channels: [p.consultationId, `${p.consultationId}.video`] });
  }

  async function startCall() {
    // The call module may follow another consultation, or not yet this one after a reload.
    await followCalls(current(JOINED));
    await window.providerCall.call();
  }

  async function endCall() {
    await window.providerCall.hangup();
  }

  async function sendChat() {
    const p = current(OPEN);
    const field = byTestId("chat-text");
    const text = field.value;
    const length = [...text].length;
    if (length < 1 || length > MAX_CHAT_CHARS || !text.trim()) {
      throw new Refused("text", `must be 1-${MAX_CHAT_CHARS} characters, not blank`);
    }
    // The id is chosen before the publish and kept: a retried publish is shown once.
    const message = {
      type: "chat",
      id: crypto.randomUUID(),
      senderId: me.userId,
      senderRole: "provider",
      text,
      sentAt: now(),
    };
    const timetoken = await publish(p.consultationId, message);
    if (!p.chat.some((m) => m.id === message.id)) {
      p.chat.push({ id: message.id, senderId: me.userId, text, timetoken, read: false });
      p.chat.sort((a, b) => (a.timetoken < b.timetoken ? -1 : 1));
    }
    field.value = "";
  }

  async function invite() {
    const p = current(OPEN);
    const invitedProviderId = document.getElementById("invitee").value;
    const role = document.getElementById("invite-role").value;
    if (!ID.test(invitedProviderId) || invitedProviderId === me.userId) {
      throw new Refused("invitedProviderId", "must be another provider of the clinic");
    }
    // The clinic first: the invited provider may then ask for a token naming this consultation.
    await clinic("invite", { consultationChannel: p.consultationId, invitedProviderId, role });
    await publish(p.consultationId, {
      action: "PROVIDER_INVITED",
      invitedProviderId,
      invitedBy: me.userId,
      role,
      timestamp: now(),
    });
    await publish(`notification.${invitedProviderId}`, {
      type: "CONSULTATION_INVITE",
      title: "Consultation invitation",
      body: `You have been invited to join a consultation as ${role}.`,
      priority: "high",
      consultationId: p.consultationId,
      invitedBy: me.userId,
      role,
      timestamp: now(),
    });
    p.invited.set(invitedProviderId, role);
  }

  // PROVIDER_REMOVED first, revoking second, so the specialist reads its removal.
  async function removeProvider(p, userId) {
    await publish(p.consultationId, {
      action: "PROVIDER_REMOVED",
      providerId: userId,
      removedBy: me.userId,
      timestamp: now(),
    });
    await clinic("revoke-access", { userId, consultationChannel: p.consultationId });
    p.invited.delete(userId);
  }

  async function escalate() {
    const p = current(OPEN);
    const severity = document.getElementById("severity").value;
    const field = document.getElementById("reason");
    const reason = field.value.trim();
    if (reason.length < 1 || reason.length > MAX_REASON_CHARS) {
      throw new Refused("reason", `must be 1-${MAX_REASON_CHARS} characters`);
    }
    const id = crypto.randomUUID();
    await publish(me.emergency, {
      id,
      action: "EMERGENCY_ESCALATION",
      consultationId: p.consultationId,
      escalatedBy: me.userId,
      severity,
      reason,
      timestamp: now(),
      status: "active",
    });
    field.value = "";
    // Every other on-call provider hears it; push `meta` is not encrypted: severity and ID only.
    const onCall = await clinic("on-call", { departmentId: me.departmentId });
    const push = `${severity.toUpperCase()} escalation ${id}`;
    const meta = {
      pn_apns: { aps: { alert: { title: "EMERGENCY", body: push }, sound: "emergency.aiff" } },
      pn_gcm: { notification: { title: "EMERGENCY", body: push, priority: "high" } },
    };
    for (const { id: providerId } of onCall.providers ?? []) {
      if (providerId === me.userId || !ID.test(providerId)) continue;
      const notification = {
        type: "EMERGENCY_ESCALATION",
        title: `URGENT: ${severity.toUpperCase()} Escalation`,
        body: reason,
        priority: "critical",
        escalationId: id,
        timestamp: now(),
      };
      await publish(`notification.${providerId}`, notification, { meta });
    }
  }

  async function resolve(id) {
    const escalation = escalations.get(id);
    if (!escalation || escalation.status !== "active") throw new Refused("escalation", "is not open");
    const field = byTestId("resolution");
    const resolution = field.value;
    if (resolution.trim().length < 1 || resolution.length > MAX_REASON_CHARS) {
      throw new Refused("resolution", `must be 1-${MAX_REASON_CHARS} characters`);
    }
    await publish(me.emergency, {
      id,
      action: "EMERGENCY_RESOLVED",
      resolvedBy: me.userId,
      resolution: resolution.trim(),
      timestamp: now(),
      status: "resolved",
    });
    field.value = "";
    escalation.status = "resolved";
  }

  // -- wiring --------------------------------------------------------------------------------------

  // The remote picture counts the frames it shows (data-frames), so "playing" is something seen.
  function countRemoteFrames() {
    const video = document.getElementById("remote");
    let frames = 0;
    const onFrame = () => {
      frames += 1;
      video.dataset.frames = String(frames);
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  async function loadProviders() {
    const answer = await fetch("/dev/providers");
    const { providers } = await answer.json();
    document
      .getElementById("provider")
      .replaceChildren(...providers.map((p) => new Option(`${p.userId} (${p.departmentId})`, p.userId)));
  }

  const on = (testid, work) => byTestId(testid).addEventListener("click", act(work));
  document.getElementById("sign-in-form").addEventListener(
    "submit",
    act(() => signIn(document.getElementById("provider").value)),
  );
  document.getElementById("queue-form").addEventListener("submit", act(queueUpdates));
  document.getElementById("chat-form").addEventListener("submit", act(sendChat));
  document.getElementById("invite-form").addEventListener("submit", act(invite));
  document.getElementById("escalate-form").addEventListener("submit", act(escalate));
  on("join", join);
  on("start-without-video", startWithoutVideo);
  on("wrap-up", wrapUp);
  on("end", end);
  on("call-start", startCall);
  on("call-end", endCall);
  countRemoteFrames();
  act(loadProviders)();
})();
