// A test peer: the real PubNub JavaScript SDK in Node, standing in for the provider's browser app.
//
// Started by tests/integration/interop as a subprocess. Configuration comes from the environment
// (never argv, which any local user can read with ps):
//   PEER_ORIGIN         relay "host:port" (plain HTTP)
//   PEER_PUBLISH_KEY, PEER_SUBSCRIBE_KEY, PEER_USER_ID, PEER_CIPHER_KEY
//   PEER_TOKEN          optional Access Manager token
//   PEER_CHANNELS       optional comma-separated default channels for "subscribe"
//
// Commands arrive on stdin, one JSON object per line; "id" is echoed back on the answer:
//   {"op":"subscribe","channels":[...]?,"withPresence":bool?}
//   {"op":"publish","channel":"...","message":...,"storeInHistory":bool?}
//   {"op":"setToken","token":"..."}
//   {"op":"fetch","channel":"...","count":n?}
//   {"op":"getUUIDMetadata","uuid":"..."}
//   {"op":"quit"}
// Events go to stdout, one JSON object per line:
//   {"event":"ready","sdkVersion"}
//   {"event":"status","category","operation","statusCode"?,"channels"}
//   {"event":"message","channel","message","publisher","timetoken","error"?}
//   {"event":"presence","channel","action","uuid","occupancy","timetoken"}
//   {"event":"result","id","op",...}   {"event":"error","id","op","statusCode","category","message"}
// Nothing here prints keys, tokens or message bodies other than as events for the test to read.

import { createInterface } from "node:readline";
import PubNub from "pubnub";

const env = process.env;
const required = (name) => {
  const value = env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
};

const pubnub = new PubNub({
  origin: required("PEER_ORIGIN"),
  ssl: false,
  publishKey: required("PEER_PUBLISH_KEY"),
  subscribeKey: required("PEER_SUBSCRIBE_KEY"),
  userId: required("PEER_USER_ID"),
  cryptoModule: PubNub.CryptoModule.aesCbcCryptoModule({ cipherKey: required("PEER_CIPHER_KEY") }),
  // As the provider app is configured (seeds/telemedicine-setup.txt): heartbeats while subscribed.
  heartbeatInterval: 30,
  presenceTimeout: 120,
});
if (env.PEER_TOKEN) pubnub.setToken(env.PEER_TOKEN);
const defaultChannels = (env.PEER_CHANNELS || "").split(",").filter(Boolean);

const emit = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);

// The SDK sends through the global fetch: report each publish's method and request-target size
// (never its content), so a test can see that the message travelled in a GET's URL.
const sdkFetch = globalThis.fetch;
globalThis.fetch = (request, init) => {
  const url = new URL(request.url ?? String(request));
  if (url.pathname.startsWith("/publish/")) {
    const target = url.pathname + url.search;
    emit({ event: "http", op: "publish", method: request.method ?? init?.method, targetBytes: target.length });
  }
  return sdkFetch(request, init);
};

pubnub.addListener({
  status: (s) =>
    emit({
      event: "status",
      category: s.category,
      operation: s.operation,
      statusCode: s.statusCode,
      // A refused subscribe is PNConnectionErrorCategory; "error" names why (e.g. PNAccessDeniedCategory).
      error: s.error,
      channels: s.affectedChannels ?? s.subscribedChannels ?? [],
    }),
  message: (m) =>
    emit({
      event: "message",
      channel: m.channel,
      message: m.message,
      publisher: m.publisher,
      timetoken: m.timetoken,
      ...(m.error ? { error: String(m.error) } : {}),
    }),
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

const commands = {
  subscribe: ({ channels, withPresence }) => {
    pubnub.subscribe({ channels: channels ?? defaultChannels, withPresence: Boolean(withPresence) });
    return {};
  },
  publish: async ({ channel, message, storeInHistory }) => {
    // sendByPost stays at the SDK's default (false): GET with the message in the path, as browsers send it.
    const answer = await pubnub.publish({ channel, message, storeInHistory: storeInHistory ?? true });
    return { timetoken: answer.timetoken };
  },
  setToken: ({ token }) => {
    pubnub.setToken(token);
    pubnub.reconnect();
    return {};
  },
  fetch: async ({ channel, count }) => {
    const answer = await pubnub.fetchMessages({ channels: [channel], count: count ?? 25 });
    const items = answer.channels[channel] ?? [];
    return {
      messages: items.map((item) => ({
        message: item.message,
        publisher: item.uuid,
        timetoken: item.timetoken,
        ...(item.error ? { error: String(item.error) } : {}),
      })),
    };
  },
  getUUIDMetadata: async ({ uuid }) => {
    // Under "objects" in SDK 12: the seeds' top-level pubnub.getUUIDMetadata no longer exists.
    const answer = await pubnub.objects.getUUIDMetadata({ uuid });
    return { custom: answer.data.custom ?? null };
  },
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
    emit({ event: "error", op: null, message: "command is not JSON" });
    return;
  }
  const { id = null, op } = request;
  const command = commands[op];
  if (!command) {
    emit({ event: "error", id, op, message: `unknown op ${op}` });
    return;
  }
  try {
    emit({ event: "result", id, op, ...(await command(request)) });
  } catch (error) {
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

// The test owns this process: when its end of stdin closes, leave at once.
const input = createInterface({ input: process.stdin });
input.on("line", (line) => void run(line));
input.on("close", () => commands.quit());

emit({ event: "ready", sdkVersion: pubnub.getVersion() });
