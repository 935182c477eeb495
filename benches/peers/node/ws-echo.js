#!/usr/bin/env node
// ws-echo: a WebSocket echo server on the Node `ws` package, a peer in wsloop's side-by-side
// benchmarks (see benches/README.md).
//
// Usage: node ws-echo.js [--port N] [--deflate]
//
// Binds 127.0.0.1 (port 0, any free port, unless --port is given), prints
// `listening on 127.0.0.1:PORT` on stdout, and echoes every text and binary message as it came.
// Node runs JavaScript on one thread, like every other peer. permessage-deflate is off unless
// --deflate is given (then ws's defaults: context takeover, level 6, messages of 1 KiB and
// more compressed; benches/compare_deflate.py). ws answers pings and echoes closes by itself.
'use strict';

const { WebSocketServer } = require('ws');

// Largest message; the same default as `wsloop echo` (64 MiB).
const MAX_MESSAGE = 64 * 1024 * 1024;

function usage() {
  process.stderr.write('usage: ws-echo.js [--port N] [--deflate]\n');
  process.exit(2);
}

let port = 0;
let deflate = false;
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--port' && i + 1 < args.length && /^\d+$/.test(args[i + 1])) {
    port = Number(args[++i]);
  } else if (args[i] === '--deflate') {
    deflate = true;
  } else {
    usage();
  }
}

const server = new WebSocketServer({
  host: '127.0.0.1',
  port,
  perMessageDeflate: deflate,
  maxPayload: MAX_MESSAGE,
});

server.on('connection', (ws, request) => {
  // The same as the other peers: small frames go out at once.
  request.socket.setNoDelay(true);
  ws.on('message', (data, isBinary) => {
    ws.send(data, { binary: isBinary });
  });
  // A connection that fails (bad frame, reset) is closed by ws; nothing to log in a benchmark.
  ws.on('error', () => {});
});

server.on('listening', () => {
  const { address, port: bound } = server.address();
  process.stdout.write(`listening on ${address}:${bound}\n`);
});

server.on('error', (err) => {
  process.stderr.write(`ws-echo: ${err.message}\n`);
  process.exit(1);
});
