#!/usr/bin/env node
// Many real Socket.IO 4 clients for tests/socketio.rs.
//
//   node client.js --url http://127.0.0.1:PORT [--clients 30] [--events 20]
//                  [--cookies jar|none] [--timeout-ms 15000]
//
// Each client uses socket.io-client's default transports (long-polling first,
// then the upgrade to WebSocket), waits until the upgrade is done, then emits
// `--events` `echo` events one after the other, each with an ack, and records
// which server answered. All clients run at once and stay connected until the
// last one is done, so a least-connections balancer sees them all.
//
// `--cookies jar`: each client keeps cookies the way Socket.IO documents for
// Node.js clients (https://socket.io/how-to/deal-with-cookies, "Node.js client
// and cookies"; since socket.io-client 4.7.0 / engine.io-client 6.5.0):
// `withCredentials: true` gives every Engine.IO session its own in-memory jar,
// filled from `Set-Cookie` of the polling responses and sent as `Cookie` on
// every later polling request and on the WebSocket handshake.
// `--cookies none`: no jar at all (the default of Node clients).
//
// Prints ONE JSON line on stdout, then exits 0:
//   { "clients", "ok", "upgraded", "errors": [..], "errorCount",
//     "sessionUnknown", "servers": { name: clients }, "mixedServers" }
// A client is ok when it connected, upgraded, got every ack, only ever talked
// to one server and saw no error or disconnection. Exits non-zero only when
// the harness itself cannot run (bad arguments, a crash). Everything is
// bounded by `--timeout-ms`: whatever is unfinished then is reported as such.
"use strict";

const { io } = require("socket.io-client");

/** At most this many error strings in the report (`errorCount` has the total). */
const MAX_REPORTED_ERRORS = 100;

function parseArgs(argv) {
  const args = { url: null, clients: 30, events: 20, cookies: "jar", timeoutMs: 15000 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) fail(`${arg} needs a value`);
      return argv[++i];
    };
    const count = (min) => {
      const n = Number(value());
      if (!Number.isInteger(n) || n < min) fail(`${arg} must be an integer >= ${min}`);
      return n;
    };
    switch (arg) {
      case "--url":
        args.url = value();
        break;
      case "--clients":
        args.clients = count(1);
        break;
      case "--events":
        args.events = count(0);
        break;
      case "--cookies":
        args.cookies = value();
        if (args.cookies !== "jar" && args.cookies !== "none") fail("--cookies must be jar or none");
        break;
      case "--timeout-ms":
        args.timeoutMs = count(1);
        break;
      default:
        fail(`unknown argument ${arg}`);
    }
  }
  if (!args.url) fail("--url is required");
  return args;
}

function fail(message) {
  process.stderr.write(`client.js: ${message}\n`);
  process.exit(2);
}

const args = parseArgs(process.argv.slice(2));
const deadline = Date.now() + args.timeoutMs;

const report = {
  clients: args.clients,
  ok: 0,
  upgraded: 0,
  errors: [],
  errorCount: 0,
  sessionUnknown: 0,
  servers: {},
  mixedServers: 0,
};

/** Text of an Engine.IO / Socket.IO error, with the HTTP status and body when known. */
function describe(err) {
  if (err === null || err === undefined) return String(err);
  const parts = [err.message !== undefined ? String(err.message) : String(err)];
  const description = err.description;
  if (typeof description === "number") {
    parts.push(`HTTP ${description}`);
  } else if (description !== undefined && description !== null) {
    parts.push(String(description.message !== undefined ? description.message : description));
  }
  const body = err.context && typeof err.context.responseText === "string" ? err.context.responseText : "";
  if (body) parts.push(body.slice(0, 200));
  return parts.join(": ");
}

function isSessionUnknown(err, text) {
  return (
    /Session ID unknown/i.test(text) ||
    (err && err.description === 400) ||
    /Unexpected server response: 400\b/.test(text) ||
    /\bHTTP 400\b/.test(text)
  );
}

class Client {
  constructor(index) {
    this.index = index;
    this.connected = false;
    this.upgraded = false;
    this.acks = 0;
    this.servers = new Set();
    this.errors = 0;
    this.finished = false;
    /** Errors already recorded (the same object reaches several listeners). */
    this.seen = new WeakSet();
    this.progress = () => {};
    this.socket = io(args.url, {
      // one Manager (one Engine.IO session) per client, not one shared by all
      forceNew: true,
      withCredentials: args.cookies === "jar",
    });
    this.watch();
  }

  /** Records one failure; `symptomOf` is true when its cause was recorded already. */
  record(where, err, symptomOf = false) {
    if (err !== null && typeof err === "object") {
      if (this.seen.has(err)) return;
      this.seen.add(err);
    }
    const text = typeof err === "string" ? err : describe(err);
    this.errors++;
    report.errorCount++;
    if (!symptomOf && isSessionUnknown(err, text)) report.sessionUnknown++;
    if (report.errors.length < MAX_REPORTED_ERRORS) {
      report.errors.push(`client ${this.index}: ${where}: ${text}`);
    }
    this.progress();
  }

  watch() {
    const socket = this.socket;
    const manager = socket.io;
    socket.on("connect", () => {
      this.connected = true;
      this.checkTransport();
    });
    socket.on("hello", (name) => this.servers.add(String(name)));
    socket.on("connect_error", (err) => this.record("connect_error", err));
    socket.on("disconnect", (reason, details) => {
      this.connected = false;
      if (!this.finished) {
        // a "transport error" carries the error that `manager.on("error")` recorded
        const cause = details && typeof details === "object" && this.seen.has(details);
        this.record("disconnect", details && !cause ? `${reason}: ${describe(details)}` : reason, cause);
      }
    });
    manager.on("error", (err) => this.record("error", err));
    // Every (re)opened Engine.IO session: watch its upgrade.
    manager.on("open", () => {
      const engine = manager.engine;
      engine.on("upgrade", () => this.checkTransport());
      // The upgrade probe's own error carries the HTTP status of a refused
      // WebSocket handshake ("Unexpected server response: 400"), which the
      // `upgradeError` event drops: observe it (observation only).
      let probeError = false;
      const createTransport = engine.createTransport.bind(engine);
      engine.createTransport = (name) => {
        const transport = createTransport(name);
        transport.on("error", (err) => {
          probeError = true;
          this.record(`${name} probe`, err);
        });
        return transport;
      };
      engine.on("upgradeError", (err) => {
        if (!probeError) this.record("upgradeError", err);
        probeError = false;
      });
      this.checkTransport();
    });
  }

  checkTransport() {
    const engine = this.socket.io.engine;
    if (engine && engine.transport && engine.transport.name === "websocket") this.upgraded = true;
    this.progress();
  }

  /** Resolves once connected over WebSocket (or never: the deadline decides). */
  ready() {
    return new Promise((resolve) => {
      this.progress = () => {
        if (this.connected && this.upgraded) resolve();
      };
      this.checkTransport();
    });
  }

  async run() {
    await this.ready();
    for (let seq = 0; seq < args.events; seq++) {
      const left = deadline - Date.now();
      if (left <= 0) return;
      let answer;
      try {
        answer = await this.socket.timeout(left).emitWithAck("echo", { client: this.index, seq });
      } catch (err) {
        this.record(`echo ${seq}`, err);
        return;
      }
      if (!answer || typeof answer.server !== "string" || !answer.payload || answer.payload.seq !== seq) {
        this.record(`echo ${seq}`, `unexpected answer ${JSON.stringify(answer)}`);
        return;
      }
      this.servers.add(answer.server);
      this.acks++;
    }
  }

  isOk() {
    return (
      this.upgraded && this.acks === args.events && this.servers.size === 1 && this.errors === 0
    );
  }

  describeState() {
    return `connected=${this.connected} upgraded=${this.upgraded} acks=${this.acks}/${args.events}`;
  }
}

async function main() {
  const clients = [];
  for (let i = 0; i < args.clients; i++) clients.push(new Client(i));
  let timer;
  const timedOut = new Promise((resolve) => {
    timer = setTimeout(() => resolve(true), Math.max(0, deadline - Date.now()));
  });
  const finished = await Promise.race([
    Promise.all(clients.map((c) => c.run())).then(() => false),
    timedOut,
  ]);
  clearTimeout(timer);
  for (const client of clients) {
    client.finished = true;
    if (finished === true && client.acks < args.events) {
      client.record("timeout", `not done after ${args.timeoutMs} ms (${client.describeState()})`);
    }
  }
  for (const client of clients) {
    if (client.upgraded) report.upgraded++;
    if (client.isOk()) report.ok++;
    if (client.servers.size > 1) report.mixedServers++;
    for (const name of client.servers) report.servers[name] = (report.servers[name] || 0) + 1;
    client.socket.disconnect();
  }
  process.stdout.write(`${JSON.stringify(report)}\n`, () => process.exit(0));
}

main().catch((err) => {
  process.stderr.write(`client.js: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
