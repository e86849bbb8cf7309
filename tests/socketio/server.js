#!/usr/bin/env node
// A real Socket.IO 4 server for tests/socketio.rs (and for trying tether by hand).
//
//   node server.js --port 0 --name s1 [--verbose]
//
// Listens on 127.0.0.1 (`--port 0` picks a free port) with Socket.IO's default
// options: long-polling first, then the upgrade to WebSocket; no `io` cookie.
// When ready it prints exactly one line on stdout: `LISTENING <port>`.
//
// - on connection it emits `hello` with its name;
// - it answers `echo` (with an ack callback) with `{ server: name, payload }`;
// - any other HTTP request gets 200 with its name (usable as a health check).
//
// It exits when its stdin closes, so a test that dies cannot leak it (keep
// stdin open when running it by hand from a script: `sleep infinity | node …`),
// and on SIGTERM / SIGINT. `--verbose` logs Engine.IO connection errors
// ("Session ID unknown", …) on stderr.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

function parseArgs(argv) {
  const args = { port: 0, name: "server", verbose: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) fail(`${arg} needs a value`);
      return argv[++i];
    };
    switch (arg) {
      case "--port":
        args.port = Number(value());
        if (!Number.isInteger(args.port) || args.port < 0 || args.port > 65535) {
          fail(`--port must be 0..65535`);
        }
        break;
      case "--name":
        args.name = value();
        break;
      case "--verbose":
        args.verbose = true;
        break;
      default:
        fail(`unknown argument ${arg}`);
    }
  }
  return args;
}

function fail(message) {
  process.stderr.write(`server.js: ${message}\n`);
  process.exit(2);
}

const { port, name, verbose } = parseArgs(process.argv.slice(2));

// Socket.IO hands requests outside its path to this listener.
const httpServer = http.createServer((req, res) => {
  res.writeHead(200, { "content-type": "text/plain", "x-server": name });
  res.end(name);
});

const io = new Server(httpServer);

io.on("connection", (socket) => {
  socket.emit("hello", name);
  socket.on("echo", (payload, ack) => {
    if (typeof ack === "function") ack({ server: name, payload });
  });
});

if (verbose) {
  io.engine.on("connection_error", (err) => {
    process.stderr.write(
      `${name}: engine.io connection error ${err.code} ${err.message} ${err.req && err.req.url}\n`,
    );
  });
}

function stop() {
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
process.stdin.on("end", stop);
process.stdin.on("close", stop);
process.stdin.on("error", stop);
process.stdin.resume();

httpServer.on("error", (err) => fail(`listen: ${err.message}`));
httpServer.listen(port, "127.0.0.1", () => {
  process.stdout.write(`LISTENING ${httpServer.address().port}\n`);
});
