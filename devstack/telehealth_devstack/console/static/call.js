// The provider's side of a video call with a patient kiosk, as an integrator would write it: the
// PubNub JavaScript SDK (browser build, global `PubNub`) for signaling and the browser's own
// RTCPeerConnection for media. Written from PROTOCOL.md, "Video signaling" and its "Recovery"
// section, and docs/protocol.md 5.4.
//
// ONE call module, two users: the provider console (console.js, which signs in, joins and hands
// this module its PubNub client through `use` and `follow`) and the interop tests' call page
// (tests/js/call-page/provider-call.html, served by tests/js/browser.mjs, which calls `start` and
// `join`). The page holds <video id="remote">, <video id="local"> and an element with id "phase".
//
// What the contract asks of this page, and where it is done:
// - a standing provider token and TURN credentials from the clinic backend, over HTTP with the
//   provider's device credential (start);
// - every channel end-to-end encrypted with the AES-256-CBC crypto module (start);
// - join: subscribe to the consultation and its `.video` channel with presence, then publish
//   PROVIDER_JOINED on the consultation channel (join);
// - signals on `consultation.{providerId}.{patientId}.video`, published with storeInHistory: false,
//   each {type, senderId, timestamp, ...} (publishSignal);
// - relay-only media: iceTransportPolicy "relay" with the clinic's TURN server (Connection);
// - trickled candidates sent as RTCIceCandidate.toJSON(), unchanged (Connection);
// - receiving: ignore our own signals and anyone's but this consultation's patient, ignore signals
//   from calls that are over, buffer candidates until the remote description they belong to is
//   set, and never answer an end-call with another one (onSignal);
// - recovery: an offer during a call is a rebuild, answered on a NEW connection while the old one
//   stays on screen; the new one replaces it at its first decoded video frame, or is abandoned 20 s
//   after its answer without one (answerRebuild). Connections are told apart by the ICE
//   usernameFragment trickled candidates carry; an answer applies to our newest offer; an offer
//   without an answer is sent again after 5, 6 and 7 s, then the call has failed (end-call);
// - glare: the provider's offer wins (our unanswered offer, or our rebuild not yet carrying media,
//   stands and the patient's offer is ignored: the patient side answers ours).
//
// `window.providerCall.Refused` is the one error type of a refusal, this module's and the console's.
// The driver calls window.providerCall.<method>(args): start, join, client, use, follow, call, rebuild,
// hangup, stats, state, mediaFlowing, frameNumbers, watchFrames, frameLog (each documented below). start's
// `ignoreOffersDuringCall: true` makes this an older provider app that never answers a rebuild;
// `camera: "numbered"` sends a drawn picture whose number is the time (see numberedCamera).
// It hears events through window.reportEvent (and `use`'s onEvent), each with `at` (the page's wall
// clock, ms):
//   {"event":"call","phase","reason"?}       idle | offering | answering | connected | ended
//   {"event":"signal","type","publisher","timetoken"}   a signal from the patient this page acted on
//   {"event":"offer","during","outcome"}     an offer received (during: a call was under way):
//                                            answered | rebuild | glare | ignored
//   {"event":"connection","id","role","state"}  a connection's state (first "new"; role: offerer |
//                                            answerer), ids counting from 1 in this page
//   {"event":"media","id"}                   the connection's first decoded video frame
//   {"event":"current","id","previous"}      the picture moved to connection `id` (previous closed)
//   {"event":"abandoned","id","reason"}      a rebuild given up; the connection on screen stays
//   {"event":"candidateSent","timetoken"}    one trickled candidate published
//   {"event":"track","id","kind"}  {"event":"status","category","operation"}
//   {"event":"dropped","field","reason"}     an incoming signal refused (no values)
//   {"event":"error","where","message"}      an exception's name only
// Nothing here reports a key, token, credential or SDP body.

"use strict";

(() => {
  // Every event carries `at`, the page's wall clock in ms (a driver measures from it).
  let onEvent = null; // the console's listener (use)
  const emit = (event) => {
    const stamped = { ...event, at: epochMs() };
    if (typeof window.reportEvent === "function") void window.reportEvent(stamped);
    if (onEvent) onEvent(stamped);
  };

  const ID = /^[A-Za-z0-9_-]{1,64}$/;
  const SIGNAL_TYPES = ["offer", "answer", "ice-candidate", "end-call"];
  const MAX_SDP_CHARS = 32768;
  const NUMBER_BITS = 16; // tests/integration/media/numbered.py: the frame number's pixel blocks
  // PROTOCOL.md, Recovery: an offer without an answer this long is sent again; after the last, the
  // call has failed. (MEDIA_DEADLINE_MS, for a rebuild's media, is with answerRebuild below.)
  const ANSWER_TIMEOUTS_MS = [5000, 6000, 7000];
  const MEDIA_POLL_MS = 50; // getStats while a connection waits for its first frame
  const MAX_WAITING_CANDIDATES = 64;

  // Senders write times as YYYY-MM-DDTHH:MM:SS.mmmZ: exactly what toISOString gives.
  const now = () => new Date().toISOString();
  const epochMs = () => performance.timeOrigin + performance.now();

  class Refused extends Error {
    constructor(field, reason) {
      super(`${field}: ${reason}`);
    }
  }

  // -- the page's state ----------------------------------------------------------------------------

  let config = null; // {userId, ...} from start
  let pubnub = null;
  let listeningTo = null; // the client whose messages reach onSignal
  let iceServers = null; // the clinic's TURN server with its time-limited credentials
  let consultation = null; // {id, video, patientId} once joined
  let localStream = null;
  let ignoreOffersDuringCall = false; // an older provider app: a rebuild offer is never answered

  // The call: `phase` idle | offering | answering | connected | ended. `floor`: timetokens at or
  // below it belong to calls that are over. `callTimetoken`: the call's first offer (a rebuild
  // belongs to the same call). `current`: the connection on screen; `next`: a rebuild (ours or the
  // patient's) that does not carry media yet. `waiting`: candidates no connection can take yet.
  const call = {
    phase: "idle",
    floor: 0n,
    callTimetoken: 0n,
    current: null,
    next: null,
    waiting: [],
    retry: null, // {timer, tries} while an offer of ours waits for its answer
  };
  const counts = {
    offersReceived: 0,
    offersAnswered: 0,
    offersIgnored: 0,
    offersSent: 0,
    answersApplied: 0,
    rebuilds: 0,
    abandoned: 0,
  };
  const connections = new Map(); // id -> Connection, closed ones too (their last counts)
  const sentCandidates = []; // the candidate lines we trickled (their type is checked by tests)
  const received = []; // every signal handled: {type, publisher, timetoken, outcome}

  const setPhase = (phase, reason) => {
    call.phase = phase;
    const shown = document.getElementById("phase");
    if (shown) shown.textContent = phase;
    emit({ event: "call", phase, ...(reason ? { reason } : {}) });
  };
  const active = () => ["offering", "answering", "connected"].includes(call.phase);

  // -- the clinic backend --------------------------------------------------------------------------

  async function clinic(path, body) {
    const answer = await fetch(new URL(path, config.clinicUrl), {
      method: "POST",
      headers: {
        Authorization: `Bearer ${config.clinicCredential}`,
        "Content-Type": "application/json",
      },
      body: JSON.stringify(body),
    });
    if (!answer.ok) throw new Refused(path, `the clinic answered ${answer.status}`);
    return answer.json();
  }

  // -- signaling -----------------------------------------------------------------------------------

  async function publishSignal(type, fields = {}) {
    // Signaling is never stored in history (PROTOCOL.md: store=0).
    const message = { type, senderId: config.userId, timestamp: now(), ...fields };
    const answer = await pubnub.publish({ channel: consultation.video, message, storeInHistory: false });
    return BigInt(answer.timetoken);
  }

  // Signals are handled one at a time, in the order they arrived: a candidate must not overtake the
  // offer it belongs to while that offer is still being set.
  let signalQueue = Promise.resolve();
  function receive(message, publisher, timetoken) {
    signalQueue = signalQueue.then(() =>
      onSignal(message, publisher, BigInt(timetoken)).catch((error) =>
        emit({ event: "error", where: "signal", message: String(error?.name ?? "Error") }),
      ),
    );
  }

  function drop(field, reason) {
    emit({ event: "dropped", field, reason });
  }

  const validSdp = (sdp) => typeof sdp === "string" && sdp.length > 0 && sdp.length <= MAX_SDP_CHARS;

  async function onSignal(message, publisher, timetoken) {
    if (typeof message !== "object" || message === null) return drop("payload", "must be a JSON object");
    if (!SIGNAL_TYPES.includes(message.type)) return drop("type", "is not a signal type");
    const note = (outcome) =>
      received.push({ type: message.type, publisher, timetoken: String(timetoken), outcome });
    if (publisher === config.userId) return note("own"); // the SDK hands our publishes back
    if (publisher !== consultation.patientId) return note("not-a-participant");
    if (message.senderId !== publisher) return drop("senderId", "must equal the publisher");
    if (timetoken <= call.floor) return note("stale"); // a call that is over
    emit({ event: "signal", type: message.type, publisher, timetoken: String(timetoken) });

    if (message.type === "offer") {
      if (!validSdp(message.sdp)) return drop("sdp", `must be 1-${MAX_SDP_CHARS} characters`);
      counts.offersReceived += 1;
      const during = active();
      const outcome = await onOffer(message.sdp, timetoken);
      emit({ event: "offer", during, outcome });
      return note(outcome);
    }
    if (message.type === "answer") {
      if (!validSdp(message.sdp)) return drop("sdp", `must be 1-${MAX_SDP_CHARS} characters`);
      return note(await onAnswer(message.sdp, timetoken));
    }
    if (message.type === "ice-candidate") {
      const candidate = message.candidate;
      if (typeof candidate !== "object" || candidate === null || typeof candidate.candidate !== "string") {
        return drop("candidate", "must be an RTCIceCandidate.toJSON() object");
      }
      return note(await routeCandidate(candidate));
    }
    // end-call: the whole call ends (never one connection); never answered with another end-call.
    if (!active()) return note("no-call");
    if (call.callTimetoken && timetoken < call.callTimetoken) return note("stale");
    call.floor = timetoken;
    closeCall();
    setPhase("ended", "remote-hangup");
    return note("ended");
  }

  // An offer: a new call, or during a call a rebuild (PROTOCOL.md, Recovery).
  async function onOffer(sdp, timetoken) {
    if (!active()) {
      call.callTimetoken = timetoken;
      setPhase("answering");
      const connection = (call.current = new Connection("answerer"));
      await connection.pc.setRemoteDescription({ type: "offer", sdp });
      await takeCandidates(connection);
      await connection.pc.setLocalDescription(await connection.pc.createAnswer());
      await publishSignal("answer", { sdp: connection.pc.localDescription.sdp });
      counts.offersAnswered += 1;
      setPhase("connected");
      watchMedia(connection, Infinity);
      return "answered";
    }
    if (ourOfferStands()) {
      counts.offersIgnored += 1;
      return "glare"; // the provider's offer wins: the patient side answers ours
    }
    if (ignoreOffersDuringCall) {
      counts.offersIgnored += 1;
      return "ignored"; // an older provider app: only a path that comes back by itself helps
    }
    await answerRebuild(sdp);
    counts.offersAnswered += 1;
    counts.rebuilds += 1;
    return "rebuild";
  }

  // Ours wins a glare: an offer of ours without its answer, or our rebuild not yet carrying media.
  function ourOfferStands() {
    const pending = call.next ?? call.current;
    if (pending?.role !== "offerer") return false;
    return pending === call.next ? !pending.carries : !pending.remoteSet;
  }

  // -- sketch: docs/protocol.md 5.4, "An offer during a call" (the same text there) ---------------
  const MEDIA_DEADLINE_MS = 20000; // a rebuild without media this long after its answer is dropped

  async function answerRebuild(offerSdp) {
    call.next?.close(); // an older rebuild that never carried media
    const next = (call.next = new Connection("answerer")); // a NEW RTCPeerConnection, relay only
    await next.pc.setRemoteDescription({ type: "offer", sdp: offerSdp });
    await takeCandidates(next); // trickled ones that came first, by usernameFragment
    await next.pc.setLocalDescription(await next.pc.createAnswer());
    await publishSignal("answer", { sdp: next.pc.localDescription.sdp });
    // The old connection stays on screen. At the new one's first decoded video frame the picture
    // moves to it and the old one is closed; without one in time, the new one is closed instead.
    firstFrame(next, MEDIA_DEADLINE_MS).then((carries) => (carries ? promote(next) : abandon(next)));
  }
  // -- end of sketch -------------------------------------------------------------------------------

  function promote(connection) {
    if (connection.closed || call.next !== connection) return;
    const previous = call.current;
    call.current = connection;
    call.next = null;
    connection.show();
    emit({ event: "current", id: connection.id, previous: previous?.id ?? null });
    previous?.close();
  }

  function abandon(connection) {
    if (connection.closed) return;
    if (call.next === connection) call.next = null;
    connection.close();
    counts.abandoned += 1;
    emit({ event: "abandoned", id: connection.id, reason: "no media in time" });
  }

  // Until the connection's first decoded video frame (true), or false once `deadlineMs` passed or
  // it closed. An audio-only call (the far side sends no video) counts its first audio packet.
  async function firstFrame(connection, deadlineMs) {
    const until = performance.now() + deadlineMs;
    while (!connection.closed && performance.now() < until) {
      const { video, audio, sendsVideo } = await connection.counters();
      if (video.framesDecoded > 0 || (!sendsVideo && audio.packetsReceived > 0)) {
        if (!connection.carries) {
          connection.carries = true;
          emit({ event: "media", id: connection.id });
        }
        return true;
      }
      await new Promise((resolve) => setTimeout(resolve, MEDIA_POLL_MS));
    }
    return false;
  }

  // The call's first connection is on screen from the start: its first frame is only reported.
  // A rebuild of ours takes over as the patient's does (answerRebuild).
  function watchMedia(connection, deadlineMs) {
    firstFrame(connection, deadlineMs).then(
      (carries) => {
        if (connection !== call.next) return;
        if (carries) promote(connection);
        else abandon(connection);
      },
      (error) => emit({ event: "error", where: "media", message: String(error?.name ?? "Error") }),
    );
  }

  // -- our offers ----------------------------------------------------------------------------------

  // A call (`current`) or a rebuild of ours (`next`): a new connection and its offer; sent again on
  // a new connection when unanswered (5, 6, 7 s), then the call has failed.
  async function offer(kind, tries = 0) {
    const connection = new Connection("offerer");
    if (kind === "call") {
      call.current?.close();
      call.current = connection;
    } else {
      call.next?.close();
      call.next = connection;
    }
    await connection.pc.setLocalDescription(await connection.pc.createOffer());
    if (connection.closed) return 0n;
    const timetoken = await publishSignal("offer", { sdp: connection.pc.localDescription.sdp });
    counts.offersSent += 1;
    connection.offerTimetoken = timetoken;
    if (kind === "call" && tries === 0 && call.current === connection) call.callTimetoken = timetoken;
    clearTimeout(call.retry?.timer);
    call.retry = {
      tries,
      timer: setTimeout(() => void unanswered(connection, kind, tries), ANSWER_TIMEOUTS_MS[tries]),
    };
    return timetoken;
  }

  async function unanswered(connection, kind, tries) {
    if (connection.closed || connection.remoteSet || !active()) return;
    if (tries + 1 < ANSWER_TIMEOUTS_MS.length) {
      await offer(kind, tries + 1).catch((error) =>
        emit({ event: "error", where: "offer", message: String(error?.name ?? "Error") }),
      );
      return;
    }
    // Nobody answered: the call is over (the consultation goes on; either side may call again).
    const timetoken = await publishSignal("end-call").catch(() => 0n);
    if (timetoken > call.floor) call.floor = timetoken;
    closeCall();
    setPhase("ended", "no-answer");
  }

  // An answer applies to our newest offer (older ones were closed when it was made).
  async function onAnswer(sdp, timetoken) {
    const connection = [call.next, call.current].find((c) => c?.role === "offerer" && !c.remoteSet);
    if (!connection || connection.closed) return "unexpected-answer";
    if (connection.offerTimetoken && timetoken < connection.offerTimetoken) return "stale";
    await connection.pc.setRemoteDescription({ type: "answer", sdp });
    await takeCandidates(connection);
    clearTimeout(call.retry?.timer);
    call.retry = null;
    counts.answersApplied += 1;
    if (connection === call.current) {
      setPhase("connected");
      watchMedia(connection, Infinity);
    } else {
      watchMedia(connection, MEDIA_DEADLINE_MS);
    }
    return "accepted";
  }

  // -- candidates: told apart by the ICE usernameFragment of the description they belong to ---------

  function ufragOfCandidate(candidate) {
    if (typeof candidate.usernameFragment === "string" && candidate.usernameFragment) {
      return candidate.usernameFragment;
    }
    const found = / ufrag (\S+)/.exec(candidate.candidate);
    return found ? found[1] : null;
  }

  function ufragOfSdp(sdp) {
    const found = /^a=ice-ufrag:(\S+)/m.exec(sdp ?? "");
    return found ? found[1] : null;
  }

  async function routeCandidate(candidate) {
    const ufrag = ufragOfCandidate(candidate);
    const target = [call.next, call.current].find(
      (c) => c && !c.closed && c.remoteSet && (ufrag === null || c.remoteUfrag === ufrag),
    );
    if (!target) {
      // Its description is not set yet (candidates overtake it): kept until it is.
      call.waiting.push(candidate);
      if (call.waiting.length > MAX_WAITING_CANDIDATES) call.waiting.shift();
      return "buffered";
    }
    await target.addCandidate(candidate);
    return "added";
  }

  async function takeCandidates(connection) {
    connection.remoteSet = true;
    connection.remoteUfrag = ufragOfSdp(connection.pc.remoteDescription?.sdp);
    const mine = (c) => {
      const ufrag = ufragOfCandidate(c);
      return ufrag === null || ufrag === connection.remoteUfrag;
    };
    const taken = call.waiting.filter(mine);
    call.waiting = call.waiting.filter((c) => !mine(c));
    for (const candidate of taken) await connection.addCandidate(candidate);
  }

  // -- media ---------------------------------------------------------------------------------------

  async function camera() {
    if (!localStream) {
      if (config.camera === "numbered") {
        const microphone = await navigator.mediaDevices.getUserMedia({ audio: true });
        localStream = new MediaStream([numberedCamera(), ...microphone.getAudioTracks()]);
      } else {
        localStream = await navigator.mediaDevices.getUserMedia({
          video: { width: 640, height: 480 },
          audio: true,
        });
      }
      document.getElementById("local").srcObject = localStream;
    }
    return localStream;
  }

  // One peer connection of the call: ours to offer or theirs to answer, relay only.
  class Connection {
    constructor(role) {
      this.id = connections.size + 1;
      this.role = role; // "offerer" | "answerer"
      this.pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: "relay" }); // TURN only
      this.offerTimetoken = 0n;
      this.remoteSet = false;
      this.remoteUfrag = null;
      this.stream = null;
      this.carries = false;
      this.closed = false;
      this.last = { video: { framesDecoded: 0, packetsReceived: 0 }, audio: { packetsReceived: 0 } };
      connections.set(this.id, this);
      emit({ event: "connection", id: this.id, role, state: "new" });
      for (const track of localStream.getTracks()) this.pc.addTrack(track, localStream); // both send
      this.pc.onicecandidate = ({ candidate }) => {
        if (this.closed || !candidate) return;
        const json = candidate.toJSON(); // sent unchanged: usernameFragment tells our connections apart
        sentCandidates.push(json.candidate);
        publishSignal("ice-candidate", { candidate: json }).then(
          (timetoken) => emit({ event: "candidateSent", timetoken: String(timetoken) }),
          (error) => emit({ event: "error", where: "ice-candidate", message: String(error?.name ?? "Error") }),
        );
      };
      this.pc.ontrack = ({ track, streams }) => {
        // Each connection's own tracks: the picture moves to them when this connection takes over.
        if (track.kind === "video") this.stream = streams[0] ?? new MediaStream([track]);
        if (track.kind === "video" && call.current === this) this.show();
        emit({ event: "track", id: this.id, kind: track.kind });
      };
      this.pc.onconnectionstatechange = () =>
        emit({ event: "connection", id: this.id, role, state: this.pc.connectionState });
    }

    show() {
      const remote = document.getElementById("remote");
      if (this.stream && remote.srcObject !== this.stream) remote.srcObject = this.stream;
    }

    async addCandidate(candidate) {
      if (!candidate.candidate) return; // end of candidates
      try {
        await this.pc.addIceCandidate(candidate);
      } catch (error) {
        drop("candidate", `was refused (${error?.name ?? "Error"})`);
      }
    }

    // Inbound counters (kept after close: the last ones read) and whether the far side sends video.
    async counters() {
      if (this.closed) return { ...this.last, sendsVideo: true };
      let report;
      try {
        report = await this.pc.getStats();
      } catch {
        return { ...this.last, sendsVideo: true }; // closed while asked: its last counters
      }
      const found = { video: { framesDecoded: 0, packetsReceived: 0 }, audio: { packetsReceived: 0 } };
      report.forEach((entry) => {
        if (entry.type !== "inbound-rtp") return;
        if (entry.kind === "video") {
          found.video = { framesDecoded: entry.framesDecoded ?? 0, packetsReceived: entry.packetsReceived ?? 0 };
        } else if (entry.kind === "audio") {
          found.audio = { packetsReceived: entry.packetsReceived ?? 0 };
        }
      });
      const description = this.pc.remoteDescription?.sdp ?? "";
      const video = description.split(/\r?\n(?=m=)/).find((section) => section.startsWith("m=video"));
      const sendsVideo = Boolean(video) && !/^a=(recvonly|inactive)/m.test(video);
      this.last = found;
      return { ...found, sendsVideo };
    }

    close() {
      if (this.closed) return;
      this.closed = true;
      this.pc.close();
      emit({ event: "connection", id: this.id, role: this.role, state: "closed" });
    }
  }

  function closeCall() {
    clearTimeout(call.retry?.timer);
    call.retry = null;
    call.next?.close();
    call.current?.close();
    call.next = null;
    call.current = null;
    call.waiting = [];
  }

  // -- a camera whose pictures carry the time they were drawn --------------------------------------

  // scripts/bench_call_tap/frame_tap.py's layout: a 12-bit number, then its complement, as 24
  // black or white blocks on grey (block size width/16, 1.5 blocks apart, from one block in).
  const TAP_BITS = 12;
  const tapBlocks = (width) => {
    const size = Math.floor(width / 16);
    const step = Math.floor((size * 3) / 2);
    const blocks = [];
    for (let row = 0; row < 3; row++) {
      for (let column = 0; column < 8; column++) blocks.push([size + column * step, size + row * step, size]);
    }
    return blocks;
  };
  const FRAME_MS = 1000 / 30;
  const sentFrames = []; // [number, epoch ms] of each picture drawn
  const shownFrames = []; // [number, epoch ms, connection id] of each remote picture read (-1: unreadable)
  const LOG_LIMIT = 20000;

  // 640x480 at 30 fps; picture k shows k mod 4096 where k = floor(epoch ms / 33.3): whoever reads
  // it knows when it was drawn, so a frame shown late (a backlog after an outage) is told from a
  // live one without this page's help.
  function numberedCamera() {
    const canvas = document.createElement("canvas");
    canvas.width = 640;
    canvas.height = 480;
    canvas.id = "camera";
    document.body.appendChild(canvas); // on the page: a canvas off the page is not always captured
    const context = canvas.getContext("2d");
    const blocks = tapBlocks(canvas.width);
    let drawn = -1;
    const draw = () => {
      const at = epochMs();
      const tick = Math.floor(at / FRAME_MS);
      if (tick !== drawn) {
        drawn = tick;
        const number = tick % 4096;
        context.fillStyle = "rgb(128,128,128)";
        context.fillRect(0, 0, canvas.width, canvas.height);
        blocks.forEach(([x, y, size], index) => {
          const bit = index < TAP_BITS ? (number >> index) & 1 : 1 - ((number >> (index - TAP_BITS)) & 1);
          context.fillStyle = bit ? "#fff" : "#000";
          context.fillRect(x, y, size, size);
        });
        sentFrames.push([number, at]);
        if (sentFrames.length > LOG_LIMIT) sentFrames.splice(0, sentFrames.length - LOG_LIMIT);
      }
      requestAnimationFrame(draw);
    };
    requestAnimationFrame(draw);
    return canvas.captureStream().getVideoTracks()[0];
  }

  // frame_tap.read: each block's centre clearly white (> 170) or black (< 85) and the two halves
  // complementary, else the picture is unreadable (-1): what a decoder shows from lost references.
  function tapNumber(pixels, width) {
    const bits = [];
    for (const [x, y, size] of tapBlocks(width)) {
      const quarter = Math.floor(size / 4);
      let sum = 0;
      let count = 0;
      for (let row = y + quarter; row < y + size - quarter; row++) {
        for (let column = x + quarter; column < x + size - quarter; column++) {
          const i = (row * width + column) * 4;
          sum += (pixels[i] + pixels[i + 1] + pixels[i + 2]) / 3;
          count += 1;
        }
      }
      const centre = sum / count;
      if (centre > 170) bits.push(1);
      else if (centre < 85) bits.push(0);
      else return -1;
    }
    for (let bit = 0; bit < TAP_BITS; bit++) if (bits[bit] === bits[TAP_BITS + bit]) return -1;
    return bits.slice(0, TAP_BITS).reduce((number, bit, index) => number | (bit << index), 0);
  }

  let watching = false;
  function watchRemoteFrames() {
    if (watching) return;
    watching = true;
    const video = document.getElementById("remote");
    const canvas = new OffscreenCanvas(320, 240); // half size: the blocks stay 20 px wide
    const context = canvas.getContext("2d", { willReadFrequently: true });
    const onFrame = () => {
      const at = epochMs();
      context.drawImage(video, 0, 0, 320, 240);
      const number = tapNumber(context.getImageData(0, 0, 320, 240).data, 320);
      shownFrames.push([number, at, call.current?.id ?? 0]);
      if (shownFrames.length > LOG_LIMIT) shownFrames.splice(0, shownFrames.length - LOG_LIMIT);
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  // -- the frame numbers drawn by the kiosk's test camera ------------------------------------------

  // tests/integration/media/numbered.py draws 16 bits as 40 px blocks on a 640x480 frame: row
  // bit // 8, column bit % 8, at (40 + column * 60, 40 + row * 60); white is 1.
  function frameNumber(context) {
    let number = 0;
    for (let bit = 0; bit < NUMBER_BITS; bit++) {
      const row = Math.floor(bit / 8);
      const column = bit % 8;
      const x = 40 + column * 60 + 10;
      const y = 40 + row * 60 + 10;
      const { data } = context.getImageData(x, y, 20, 20);
      let sum = 0;
      for (let i = 0; i < data.length; i += 4) sum += (data[i] + data[i + 1] + data[i + 2]) / 3;
      if (sum / (data.length / 4) > 128) number |= 1 << bit;
    }
    return number;
  }

  // -- what the driver calls -----------------------------------------------------------------------

  window.providerCall = {
    /** The error type of every refusal here: the console shows its message (field: reason). */
    Refused,

    /** Standing token, TURN credentials and the SDK with its crypto module. */
    async start(settings) {
      for (const field of ["origin", "publishKey", "subscribeKey", "cipherKey", "clinicUrl"]) {
        if (typeof settings?.[field] !== "string" || !settings[field]) {
          throw new Refused(field, "is required");
        }
      }
      for (const field of ["userId", "departmentId"]) {
        if (!ID.test(settings?.[field] ?? "")) throw new Refused(field, "must be an ID");
      }
      if (!["fake", "numbered", undefined].includes(settings.camera)) {
        throw new Refused("camera", 'must be "fake" or "numbered"');
      }
      config = settings;
      ignoreOffersDuringCall = settings.ignoreOffersDuringCall === true;
      // No consultation named: the provider's standing token (PROTOCOL.md, "Who calls what").
      const grant = await clinic("/api/telemedicine/token", {
        userId: config.userId,
        role: "provider",
        departmentId: config.departmentId,
      });
      const turn = await clinic("/api/telemedicine/turn-credentials", { userId: config.userId });
      iceServers = [{ urls: turn.urls, username: turn.username, credential: turn.credential }];
      pubnub = window.providerCall.client({ ...config, token: grant.token });
      await window.providerCall.use({ pubnub, userId: config.userId, iceServers, camera: config.camera });
      await camera(); // before any offer: an offer must not wait for the devices
      return { sdkVersion: pubnub.getVersion(), ttlMinutes: grant.ttlMinutes, turnUrls: turn.urls };
    },

    /** A provider's PubNub client as PROTOCOL.md has it: the relay `origin` (plain HTTP on the
     * development stack), the keys, every channel encrypted with AES-256-CBC under `cipherKey`, the
     * user ID its `token` is bound to. */
    client({ origin, publishKey, subscribeKey, userId, cipherKey, token }) {
      const client = new PubNub({
        origin,
        ssl: false,
        publishKey,
        subscribeKey,
        userId,
        cryptoModule: PubNub.CryptoModule.aesCbcCryptoModule({ cipherKey }),
        heartbeatInterval: 30,
        presenceTimeout: 120,
      });
      client.setToken(token);
      return client;
    },

    /** An app that has its own signed-in PubNub client (the console) lends it to the call:
     * `iceServers` from its backend's TURN credentials; `onEvent` hears this module's events. */
    async use(options) {
      if (!ID.test(options?.userId ?? "")) throw new Refused("userId", "must be an ID");
      if (!Array.isArray(options.iceServers)) throw new Refused("iceServers", "must be a list");
      const first = listeningTo !== options.pubnub;
      listeningTo = options.pubnub;
      config = { ...(config ?? {}), userId: options.userId, camera: options.camera };
      iceServers = options.iceServers;
      pubnub = options.pubnub;
      if (typeof options.onEvent === "function") onEvent = options.onEvent;
      if (!first) return {};
      pubnub.addListener({
        message: (m) => {
          if (consultation && m.channel === consultation.video) receive(m.message, m.publisher, m.timetoken);
        },
        status: (s) => emit({ event: "status", category: s.category, operation: s.operation }),
      });
      return {};
    },

    /** The consultation whose `.video` channel carries the calls from now on (the app subscribes
     * to it and publishes its join itself); the camera is opened here, before any offer. */
    async follow({ consultationId }) {
      const parts = typeof consultationId === "string" ? consultationId.split(".") : [];
      const [prefix, providerId, patientId] = parts;
      const ours = parts.length === 3 && prefix === "consultation" && providerId === config?.userId;
      if (!ours || !ID.test(patientId)) {
        throw new Refused("consultationId", "must be consultation.{this provider}.{patientId}");
      }
      if (consultation?.id !== consultationId) {
        if (active()) throw new Refused("call", `a call is ${call.phase} in another consultation`);
        call.floor = 0n;
        call.phase = "idle";
      }
      consultation = { id: consultationId, video: `${consultationId}.video`, patientId };
      await camera();
      return { video: consultation.video };
    },

    /** Subscribe to the consultation and its `.video`, then PROVIDER_JOINED: the kiosk may answer. */
    async join({ consultationId }) {
      await window.providerCall.follow({ consultationId });
      const channels = [consultation.id, consultation.video];
      await new Promise((resolve, reject) => {
        const listener = {
          status: (s) => {
            const subscribed = s.subscribedChannels ?? s.affectedChannels ?? [];
            const covered = channels.every((channel) => subscribed.includes(channel));
            if (s.category === "PNConnectedCategory" && covered) {
              pubnub.removeListener(listener);
              resolve();
            } else if (s.error) {
              pubnub.removeListener(listener);
              reject(new Refused("subscribe", String(s.category)));
            }
          },
        };
        pubnub.addListener(listener);
        pubnub.subscribe({ channels, withPresence: true });
      });
      const answer = await pubnub.publish({
        channel: consultation.id,
        message: {
          action: "PROVIDER_JOINED",
          providerId: config.userId,
          state: "connecting",
          timestamp: now(),
        },
      });
      return { timetoken: answer.timetoken };
    },

    /** Call the patient: a relay-only connection, our offer; candidates trickle as they come. */
    async call() {
      if (!consultation) throw new Refused("consultationId", "join a consultation first");
      if (active()) throw new Refused("call", `a call is already ${call.phase}`);
      setPhase("offering");
      call.callTimetoken = 0n;
      const timetoken = await offer("call");
      return { timetoken: String(timetoken), id: call.current?.id ?? null };
    },

    /** Rebuild the call under way: a new connection and its offer; the old one stays on screen
     * until the new one carries media. */
    async rebuild() {
      if (call.phase !== "connected" || !call.current) throw new Refused("call", "no call is connected");
      counts.rebuilds += 1;
      const timetoken = await offer("rebuild");
      return { timetoken: String(timetoken), id: call.next?.id ?? null };
    },

    /** End the call: one end-call, then every connection of the call closes. */
    async hangup() {
      if (!active()) throw new Refused("call", "no call is under way");
      const timetoken = await publishSignal("end-call");
      call.floor = timetoken;
      closeCall();
      setPhase("ended", "hangup");
      return { timetoken: String(timetoken) };
    },

    /** What the connection on screen says: inbound video and audio, the pair in use, what we
     * trickled, every signal handled. */
    async stats() {
      const found = {
        phase: call.phase,
        currentId: call.current?.id ?? null,
        nextId: call.next?.id ?? null,
        sentCandidates: [...sentCandidates],
        received: [...received],
      };
      const pc = call.current?.pc;
      if (!pc) return found;
      found.connectionState = pc.connectionState;
      const report = await pc.getStats();
      const byId = new Map();
      report.forEach((entry) => byId.set(entry.id, entry));
      report.forEach((entry) => {
        if (entry.type === "inbound-rtp" && entry.kind === "video") {
          found.video = {
            framesDecoded: entry.framesDecoded ?? 0,
            packetsReceived: entry.packetsReceived ?? 0,
            frameWidth: entry.frameWidth ?? null,
            frameHeight: entry.frameHeight ?? null,
          };
        } else if (entry.type === "inbound-rtp" && entry.kind === "audio") {
          found.audio = {
            packetsReceived: entry.packetsReceived ?? 0,
            totalSamplesReceived: entry.totalSamplesReceived ?? 0,
          };
        } else if (entry.type === "transport" && entry.selectedCandidatePairId) {
          const pair = byId.get(entry.selectedCandidatePairId);
          const local = pair && byId.get(pair.localCandidateId);
          const remote = pair && byId.get(pair.remoteCandidateId);
          found.selectedPair = {
            local: local?.candidateType ?? null,
            remote: remote?.candidateType ?? null,
          };
        }
      });
      return found;
    },

    /** The recovery's view: the call, which connection is on screen and which is coming, each
     * connection's decoded frames (the last read for a closed one), and the offer counts. */
    async state() {
      const list = [];
      for (const connection of connections.values()) {
        const { video, audio } = await connection.counters();
        list.push({
          id: connection.id,
          role: connection.role,
          place: connection === call.current ? "current" : connection === call.next ? "next" : "closed",
          carries: connection.carries,
          connectionState: connection.pc.connectionState,
          framesDecoded: video.framesDecoded,
          audioPackets: audio.packetsReceived,
        });
      }
      return {
        phase: call.phase,
        currentId: call.current?.id ?? null,
        nextId: call.next?.id ?? null,
        counts: { ...counts },
        connections: list,
      };
    },

    /** The stats once remote video frames are decoded and audio packets arrived (read per frame). */
    async mediaFlowing() {
      const video = document.getElementById("remote");
      for (;;) {
        const found = await window.providerCall.stats();
        if (found.video?.framesDecoded > 0 && found.audio?.packetsReceived > 0) return found;
        await new Promise((resolve) => video.requestVideoFrameCallback(resolve));
      }
    },

    /** The numbers drawn in the next `frames` remote video frames (numbered.py's layout). */
    async frameNumbers({ frames = 10 } = {}) {
      const video = document.getElementById("remote");
      const canvas = new OffscreenCanvas(640, 480);
      const context = canvas.getContext("2d", { willReadFrequently: true });
      const numbers = [];
      while (numbers.length < frames) {
        await new Promise((resolve) => video.requestVideoFrameCallback(resolve));
        context.drawImage(video, 0, 0, 640, 480); // whatever size arrived, scaled to the drawn one
        numbers.push(frameNumber(context));
      }
      return { numbers, width: video.videoWidth, height: video.videoHeight };
    },

    /** From now on every remote frame shown is read (frame_tap's layout) and logged with its time. */
    async watchFrames() {
      watchRemoteFrames();
      return { at: epochMs() };
    },

    /** The logs from the given positions on: `sent` [number, epoch ms] of our numbered camera,
     * `shown` [number (-1 unreadable), epoch ms, connection on screen]; and the page's clock now. */
    async frameLog({ sentFrom = 0, shownFrom = 0 } = {}) {
      return {
        sent: sentFrames.slice(sentFrom),
        shown: shownFrames.slice(shownFrom),
        sentEnd: sentFrames.length,
        shownEnd: shownFrames.length,
        now: epochMs(),
      };
    },
  };
})();
