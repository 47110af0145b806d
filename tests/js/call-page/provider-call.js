// The provider's side of a video call with a patient kiosk, as an integrator would write it: the
// PubNub JavaScript SDK (browser build, global `PubNub`) for signaling and the browser's own
// RTCPeerConnection for media. Written from PROTOCOL.md, "Video signaling", and docs/protocol.md 5.4.
//
// What the contract asks of this page, and where it is done:
// - a standing provider token and TURN credentials from the clinic backend, over HTTP with the
//   provider's device credential (start);
// - every channel end-to-end encrypted with the AES-256-CBC crypto module (start);
// - join: subscribe to the consultation and its `.video` channel with presence, then publish
//   PROVIDER_JOINED on the consultation channel (join);
// - signals on `consultation.{providerId}.{patientId}.video`, published with storeInHistory: false,
//   each {type, senderId, timestamp, ...} (publishSignal);
// - relay-only media: iceTransportPolicy "relay" with the clinic's TURN server (newConnection);
// - trickled candidates sent as RTCIceCandidate.toJSON(), unchanged (newConnection);
// - receiving: ignore our own signals and anyone's but this consultation's patient, ignore signals
//   from calls that are over, buffer candidates until the remote description is set, and never
//   answer an end-call with another one (onSignal);
// - the provider is the impolite side of perfect negotiation: when both offer at once it keeps its
//   own offer and ignores the patient's (the patient yields and answers).
//
// The driver calls window.providerCall.<method>(args): start, join, call, hangup, stats,
// mediaFlowing, frameNumbers (each documented below). It hears events through window.reportEvent:
//   {"event":"call","phase","reason"?}       idle | offering | answering | connected | ended
//   {"event":"signal","type","publisher","timetoken"}   a signal from the patient this page acted on
//   {"event":"candidateSent","timetoken"}    one trickled candidate published
//   {"event":"track","kind"}  {"event":"connection","state"}  {"event":"status","category","operation"}
//   {"event":"dropped","field","reason"}     an incoming signal refused (no values)
//   {"event":"error","where","message"}      an exception's name only
// Nothing here reports a key, token, credential or SDP body.

"use strict";

(() => {
  const emit = (event) => {
    if (typeof window.reportEvent === "function") void window.reportEvent(event);
  };

  const ID = /^[A-Za-z0-9_-]{1,64}$/;
  const SIGNAL_TYPES = ["offer", "answer", "ice-candidate", "end-call"];
  const MAX_SDP_CHARS = 32768;
  const NUMBER_BITS = 16; // tests/integration/media/numbered.py: the frame number's pixel blocks

  // Senders write times as YYYY-MM-DDTHH:MM:SS.mmmZ: exactly what toISOString gives.
  const now = () => new Date().toISOString();

  class Refused extends Error {
    constructor(field, reason) {
      super(`${field}: ${reason}`);
    }
  }

  // -- the page's state ----------------------------------------------------------------------------

  let config = null; // {userId, ...} from start
  let pubnub = null;
  let iceServers = null; // the clinic's TURN server with its time-limited credentials
  let consultation = null; // {id, video, patientId} once joined
  let localStream = null;

  // The call: `phase` idle | offering | answering | connected | ended. `floor`: timetokens at or
  // below it belong to calls that are over. `callTimetoken`: our offer's or theirs (0 while none).
  const call = {
    phase: "idle",
    pc: null,
    floor: 0n,
    callTimetoken: 0n,
    remoteSet: false,
    pending: [], // candidates that came before the remote description
  };
  const sentCandidates = []; // the candidate lines we trickled (their type is checked by tests)
  const received = []; // every signal handled: {type, publisher, timetoken, outcome}

  const setPhase = (phase, reason) => {
    call.phase = phase;
    document.getElementById("phase").textContent = phase;
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
      if (typeof message.sdp !== "string" || !message.sdp || message.sdp.length > MAX_SDP_CHARS) {
        return drop("sdp", `must be 1-${MAX_SDP_CHARS} characters`);
      }
      if (call.phase === "offering" && !call.remoteSet) {
        return note("glare"); // impolite: our offer stands, the patient answers it
      }
      note("answered");
      return answer(message.sdp, timetoken);
    }
    if (message.type === "answer") {
      if (call.phase !== "offering" || call.remoteSet) return note("unexpected-answer");
      if (typeof message.sdp !== "string" || !message.sdp || message.sdp.length > MAX_SDP_CHARS) {
        return drop("sdp", `must be 1-${MAX_SDP_CHARS} characters`);
      }
      if (call.callTimetoken && timetoken < call.callTimetoken) return note("stale");
      await call.pc.setRemoteDescription({ type: "answer", sdp: message.sdp });
      await remoteDescriptionSet();
      setPhase("connected");
      return note("accepted");
    }
    if (message.type === "ice-candidate") {
      const candidate = message.candidate;
      if (typeof candidate !== "object" || candidate === null || typeof candidate.candidate !== "string") {
        return drop("candidate", "must be an RTCIceCandidate.toJSON() object");
      }
      if (!call.remoteSet) {
        call.pending.push(candidate); // it overtook its description: keep it for later
        return note("buffered");
      }
      await addCandidate(candidate);
      return note("added");
    }
    // end-call: end ours, never answer it with another one (two such peers would loop).
    if (!active()) return note("no-call");
    if (call.callTimetoken && timetoken < call.callTimetoken) return note("stale");
    call.floor = timetoken;
    closeConnection();
    setPhase("ended", "remote-hangup");
    return note("ended");
  }

  async function addCandidate(candidate) {
    if (!candidate.candidate) return; // end of candidates
    try {
      await call.pc.addIceCandidate(candidate);
    } catch (error) {
      drop("candidate", `was refused (${error?.name ?? "Error"})`);
    }
  }

  async function remoteDescriptionSet() {
    call.remoteSet = true;
    const waiting = call.pending;
    call.pending = [];
    for (const candidate of waiting) await addCandidate(candidate);
  }

  // -- media ---------------------------------------------------------------------------------------

  async function camera() {
    if (!localStream) {
      localStream = await navigator.mediaDevices.getUserMedia({
        video: { width: 640, height: 480 },
        audio: true,
      });
      document.getElementById("local").srcObject = localStream;
    }
    return localStream;
  }

  async function newConnection() {
    closeConnection();
    const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: "relay" }); // TURN only
    call.pc = pc;
    call.remoteSet = false;
    call.pending = [];
    const stream = await camera();
    for (const track of stream.getTracks()) pc.addTrack(track, stream); // both sides send
    pc.onicecandidate = ({ candidate }) => {
      if (call.pc !== pc || !candidate) return;
      const json = candidate.toJSON(); // sent unchanged: the agent handles the "candidate:" prefix
      sentCandidates.push(json.candidate);
      publishSignal("ice-candidate", { candidate: json }).then(
        (timetoken) => emit({ event: "candidateSent", timetoken: String(timetoken) }),
        (error) => emit({ event: "error", where: "ice-candidate", message: String(error?.name ?? "Error") }),
      );
    };
    pc.ontrack = ({ track, streams }) => {
      if (call.pc !== pc) return;
      if (track.kind === "video") document.getElementById("remote").srcObject = streams[0];
      emit({ event: "track", kind: track.kind });
    };
    pc.onconnectionstatechange = () => {
      if (call.pc === pc) emit({ event: "connection", state: pc.connectionState });
    };
    return pc;
  }

  function closeConnection() {
    const pc = call.pc;
    call.pc = null;
    call.remoteSet = false;
    call.pending = [];
    if (pc) pc.close();
  }

  async function answer(sdp, timetoken) {
    // A new offer while a call is under way: the patient rebuilt its connection; follow it.
    setPhase("answering");
    call.callTimetoken = timetoken;
    const pc = await newConnection();
    await pc.setRemoteDescription({ type: "offer", sdp });
    await remoteDescriptionSet();
    await pc.setLocalDescription(await pc.createAnswer());
    await publishSignal("answer", { sdp: pc.localDescription.sdp });
    setPhase("connected");
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
      config = settings;
      // No consultation named: the provider's standing token (PROTOCOL.md, "Who calls what").
      const grant = await clinic("/api/telemedicine/token", {
        userId: config.userId,
        role: "provider",
        departmentId: config.departmentId,
      });
      const turn = await clinic("/api/telemedicine/turn-credentials", { userId: config.userId });
      iceServers = [{ urls: turn.urls, username: turn.username, credential: turn.credential }];
      pubnub = new PubNub({
        origin: config.origin,
        ssl: false,
        publishKey: config.publishKey,
        subscribeKey: config.subscribeKey,
        userId: config.userId,
        cryptoModule: PubNub.CryptoModule.aesCbcCryptoModule({ cipherKey: config.cipherKey }),
        heartbeatInterval: 30,
        presenceTimeout: 120,
      });
      pubnub.setToken(grant.token);
      pubnub.addListener({
        message: (m) => {
          if (consultation && m.channel === consultation.video) receive(m.message, m.publisher, m.timetoken);
        },
        status: (s) => emit({ event: "status", category: s.category, operation: s.operation }),
      });
      return { sdkVersion: pubnub.getVersion(), ttlMinutes: grant.ttlMinutes, turnUrls: turn.urls };
    },

    /** Subscribe to the consultation and its `.video`, then PROVIDER_JOINED: the kiosk may answer. */
    async join({ consultationId }) {
      const parts = typeof consultationId === "string" ? consultationId.split(".") : [];
      const [prefix, providerId, patientId] = parts;
      const ours = parts.length === 3 && prefix === "consultation" && providerId === config.userId;
      if (!ours || !ID.test(patientId)) {
        throw new Refused("consultationId", "must be consultation.{this provider}.{patientId}");
      }
      consultation = { id: consultationId, video: `${consultationId}.video`, patientId };
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
      const pc = await newConnection();
      await pc.setLocalDescription(await pc.createOffer());
      const timetoken = await publishSignal("offer", { sdp: pc.localDescription.sdp });
      if (call.pc === pc && call.phase === "offering") call.callTimetoken = timetoken;
      return { timetoken: String(timetoken) };
    },

    /** End the call: one end-call, then the connection closes. */
    async hangup() {
      if (!active()) throw new Refused("call", "no call is under way");
      const timetoken = await publishSignal("end-call");
      call.floor = timetoken;
      closeConnection();
      setPhase("ended", "hangup");
      return { timetoken: String(timetoken) };
    },

    /** What the connection says: inbound video and audio, the pair in use, what we trickled. */
    async stats() {
      const found = { phase: call.phase, sentCandidates: [...sentCandidates], received: [...received] };
      const pc = call.pc;
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
  };
})();
