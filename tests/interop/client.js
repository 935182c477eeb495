#!/usr/bin/env node
// Interop client: drives `wsloop echo` with the Node `ws` package (8.x).
//
// Usage: node client.js URL SCENARIO [--ca FILE]
//
// URL is ws:// or wss://; for wss://, --ca names the PEM file of the CA to trust (the tests'
// own CA), instead of the system's roots.
//
// Scenarios (each on a fresh connection to URL):
//   session       text (ASCII, non-ASCII, empty), binary (and empty), fragmented messages
//                 sent with send(data, {fin: false}) (text split inside a UTF-8 sequence,
//                 binary with an empty middle fragment), 16 MiB binary and 16 MiB text,
//                 pings with payloads and their pongs, then a close 1000 with a reason: the
//                 server must echo 1000 and close TCP.
//   close-4000    one echo, then a close 4000: the server must echo 4000.
//   invalid-utf8  a text frame that is not UTF-8 (ws sends a Buffer with {binary: false}
//                 unchecked): the server must fail the connection with 1007.
//   too-big       for a server started with `--max-message 65536`: 65536 bytes are echoed,
//                 65537 bytes make the server fail the connection with 1009.
//
// Prints one `ok: ...` line per check and, when every check passed, the summary line
// `interop ok: node-ws SCENARIO (N checks)`. Exits 1 on the first mismatch (reported on
// stderr as `MISMATCH: ...`), 2 on a usage error.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const WebSocket = require('ws');

const CLIENT = 'node-ws';
const MIB = 1024 * 1024;
// Bound on every single step (connect, one echo, one pong), in milliseconds.
const STEP_TIMEOUT = 30000;
// ws destroys the socket this long after the closing handshake if the server keeps TCP open.
const CLOSE_TIMEOUT = 10000;
// A close that takes longer than this means the server did not close TCP (RFC 6455 §7.1.1).
const CLOSE_TCP_BOUND = 8000;
// Bound on a whole scenario, so that the script never hangs by itself.
const SCENARIO_TIMEOUT = 100000;
// Limit configured for the too-big scenario (`wsloop echo --max-message 65536`).
const TOO_BIG_LIMIT = 65536;

class Mismatch extends Error {}

let checkCount = 0;

function ok(what) {
  checkCount += 1;
  console.log(`ok: ${what}`);
}

function expect(cond, what, detail) {
  if (!cond) throw new Mismatch(detail ? `${what}: ${detail}` : what);
  ok(what);
}

/** A short description of a payload: itself when small, else length and digest. */
function describe(buf, isBinary) {
  const kind = isBinary ? 'binary' : 'text';
  if (buf.length <= 64) return `${kind} ${JSON.stringify(buf.toString('latin1'))} (hex ${buf.toString('hex')})`;
  const digest = crypto.createHash('sha256').update(buf).digest('hex').slice(0, 16);
  return `${kind} of ${buf.length} bytes, sha256 ${digest}`;
}

/** Deterministic pseudo-random bytes (xorshift32), so that failures are reproducible. */
function pseudoRandomBytes(len, seed) {
  const buf = Buffer.allocUnsafe(len);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    buf[i] = x & 0xff;
  }
  return buf;
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Mismatch(`${what}: no answer within ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * One connection whose events are queued, so that a scenario can await them in order:
 * messages, pongs and the final close.
 */
class Conn {
  constructor(ws) {
    this.ws = ws;
    this.queue = [];
    this.waiter = null;
    this.closed = null; // {code, reason, at} once the 'close' event fired
    this.closeWaiters = [];
    this.error = null;
    ws.on('message', (data, isBinary) => this.push({ type: 'message', data, isBinary }));
    ws.on('pong', (data) => this.push({ type: 'pong', data }));
    ws.on('ping', (data) => this.push({ type: 'ping', data }));
    ws.on('error', (err) => {
      this.error = err;
      console.log(`info: ws error event: ${err.message}`);
    });
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString('utf8'), at: Date.now() };
      this.push({ type: 'close', code, reason: this.closed.reason });
      for (const resolve of this.closeWaiters) resolve(this.closed);
      this.closeWaiters = [];
    });
  }

  push(event) {
    this.queue.push(event);
    if (this.waiter) {
      const resolve = this.waiter;
      this.waiter = null;
      resolve();
    }
  }

  /** The next event (message, pong, ping or close), within STEP_TIMEOUT. */
  async next(what) {
    if (this.queue.length === 0) {
      await withTimeout(new Promise((resolve) => (this.waiter = resolve)), STEP_TIMEOUT, what);
    }
    return this.queue.shift();
  }

  /** The 'close' event, within `ms`. */
  waitClosed(ms, what) {
    if (this.closed) return Promise.resolve(this.closed);
    return withTimeout(new Promise((resolve) => this.closeWaiters.push(resolve)), ms, what);
  }

  /** Sends and resolves once ws has handed the frame to the socket. */
  send(data, options, what) {
    return withTimeout(
      new Promise((resolve, reject) => {
        this.ws.send(data, options, (err) => (err ? reject(new Mismatch(`${what}: ${err.message}`)) : resolve()));
      }),
      STEP_TIMEOUT,
      what
    );
  }
}

// The CA of wss:// connections (undefined: the system's roots), read from --ca.
let trustedCa;

async function openConnection(url, options = {}) {
  const ws = new WebSocket(url, {
    ...options,
    ...(trustedCa ? { ca: trustedCa } : {}),
    maxPayload: 32 * MIB,
    handshakeTimeout: STEP_TIMEOUT,
    closeTimeout: CLOSE_TIMEOUT
  });
  const conn = new Conn(ws);
  ws.once('upgrade', (res) => {
    conn.extensionsHeader = res.headers['sec-websocket-extensions'];
  });
  await withTimeout(
    new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('unexpected-response', (_req, res) =>
        reject(new Mismatch(`opening handshake: HTTP ${res.statusCode}`))
      );
      ws.once('error', (err) => reject(new Mismatch(`opening handshake: ${err.message}`)));
      ws.once('close', (code) => reject(new Mismatch(`opening handshake: closed with ${code}`)));
    }),
    STEP_TIMEOUT,
    'opening handshake'
  );
  ok('handshake completed (101)');
  console.log(`info: server extensions: ${JSON.stringify(ws.extensions)}`);
  return conn;
}

/** Expects the next event to be a message equal to `expected` (a Buffer) of the given kind. */
async function expectMessage(conn, expected, isBinary, what) {
  const ev = await conn.next(`echo of ${what}`);
  if (ev.type === 'close') {
    throw new Mismatch(`echo of ${what}: connection closed with ${ev.code} ${JSON.stringify(ev.reason)}`);
  }
  if (ev.type !== 'message') throw new Mismatch(`echo of ${what}: got a ${ev.type} instead`);
  expect(
    ev.isBinary === isBinary && Buffer.isBuffer(ev.data) && ev.data.equals(expected),
    `echo of ${what}`,
    `expected ${describe(expected, isBinary)}, got ${describe(ev.data, ev.isBinary)}`
  );
}

async function echo(conn, payload, what) {
  const isBinary = typeof payload !== 'string';
  await conn.send(payload, { binary: isBinary }, `send ${what}`);
  const expected = isBinary ? payload : Buffer.from(payload, 'utf8');
  await expectMessage(conn, expected, isBinary, what);
}

/** Sends `fragments` (Buffers) as one message, each in its own frame. */
async function echoFragmented(conn, fragments, isBinary, what) {
  for (let i = 0; i < fragments.length; i++) {
    const fin = i === fragments.length - 1;
    await conn.send(fragments[i], { binary: isBinary, fin }, `send fragment ${i + 1} of ${what}`);
  }
  await expectMessage(conn, Buffer.concat(fragments), isBinary, what);
}

async function ping(conn, payload) {
  await withTimeout(
    new Promise((resolve, reject) =>
      conn.ws.ping(payload, undefined, (err) => (err ? reject(new Mismatch(`send ping: ${err.message}`)) : resolve()))
    ),
    STEP_TIMEOUT,
    'send ping'
  );
  const ev = await conn.next(`pong for a ping of ${payload.length} bytes`);
  if (ev.type !== 'pong') throw new Mismatch(`pong for a ping of ${payload.length} bytes: got a ${ev.type}`);
  expect(
    ev.data.equals(payload),
    `pong echoed the ${payload.length}-byte ping payload`,
    `expected hex ${payload.toString('hex')}, got hex ${ev.data.toString('hex')}`
  );
}

async function closeAndCheck(conn, code, reason, expectedCode) {
  const started = Date.now();
  conn.ws.close(code, reason);
  const closed = await conn.waitClosed(CLOSE_TIMEOUT + STEP_TIMEOUT, `close ${code}`);
  // ws reports 1005 for a close frame without a code and 1006 when none arrived.
  expect(
    closed.code === expectedCode,
    `server echoed close code ${expectedCode}`,
    `got ${closed.code} reason ${JSON.stringify(closed.reason)}`
  );
  console.log(`info: server close reason: ${JSON.stringify(closed.reason)}`);
  const elapsed = closed.at - started;
  expect(elapsed < CLOSE_TCP_BOUND, 'server closed TCP after the closing handshake', `close took ${elapsed} ms`);
  expectNoLeftovers(conn);
}

/** Expects the server to fail the connection with `expectedCode`. */
async function expectFailure(conn, expectedCode, what) {
  const started = Date.now();
  const ev = await conn.next(what);
  if (ev.type !== 'close') {
    throw new Mismatch(`${what}: expected close ${expectedCode}, got a ${ev.type}`);
  }
  expect(ev.code === expectedCode, `${what}: server closed with ${expectedCode}`, `got ${ev.code} ${JSON.stringify(ev.reason)}`);
  console.log(`info: server close reason: ${JSON.stringify(ev.reason)}`);
  const elapsed = conn.closed.at - started;
  expect(elapsed < CLOSE_TCP_BOUND, `${what}: server closed TCP`, `took ${elapsed} ms`);
}

function expectNoLeftovers(conn) {
  const left = conn.queue.filter((ev) => ev.type !== 'close');
  expect(left.length === 0, 'no unexpected frames', `left over: ${left.map((ev) => ev.type).join(', ')}`);
}

// perMessageDeflate options for each parameter set (RFC 7692 §7.1), and the server's answer.
// ws offers client_max_window_bits without a value unless told otherwise; the server answers 15.
const DEFLATE_SETS = [
  [{}, 'permessage-deflate; client_max_window_bits=15'],
  [{ serverNoContextTakeover: true }, 'permessage-deflate; server_no_context_takeover; client_max_window_bits=15'],
  [{ clientNoContextTakeover: true }, 'permessage-deflate; client_no_context_takeover; client_max_window_bits=15'],
  [
    { serverMaxWindowBits: 10 },
    'permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=15'
  ],
  [{ clientMaxWindowBits: 9 }, 'permessage-deflate']
];

const scenarios = {
  async deflate(url) {
    const jsonLike = Array.from({ length: 200 }, (_, i) => `{"id":${i},"user":"u${i % 97}","ok":true},`)
      .join('')
      .slice(0, 4096);
    for (const [params, answer] of DEFLATE_SETS) {
      const what = JSON.stringify(params);
      const conn = await openConnection(url, { perMessageDeflate: { ...params, threshold: 0 } });
      const got = conn.extensionsHeader;
      expect(got === answer, `answer to ${what}`, `got ${got}`);
      await echo(conn, 'sixteen bytes!!!', `16 B text with ${what}`);
      await echo(conn, jsonLike, `4 KiB JSON-like text with ${what}`);
      await echo(conn, pseudoRandomBytes(65536, 7692), `64 KiB binary with ${what}`);
      await echoFragmented(
        conn,
        ['frag', 'mented ', 'text'].map((s) => Buffer.from(s)),
        false,
        `fragments with ${what}`
      );
      await closeAndCheck(conn, 1000, 'bye', 1000);
    }
  },

  async session(url) {
    const conn = await openConnection(url);
    await echo(conn, 'hello, wsloop', 'ASCII text');
    await echo(conn, 'héllo wörld — ☃ 😀 日本語', 'non-ASCII text');
    await echo(conn, '', 'empty text');
    await echo(conn, Buffer.from(Array.from({ length: 256 }, (_, i) => i)), 'binary 0..255');
    await echo(conn, Buffer.alloc(0), 'empty binary');

    await echoFragmented(
      conn,
      ['frag', 'mented ', 'text'].map((s) => Buffer.from(s)),
      false,
      'text in 3 fragments'
    );
    // "café €" split inside the two-byte é and the three-byte €: the server must validate
    // UTF-8 across fragment boundaries and still accept it.
    await echoFragmented(
      conn,
      [Buffer.from('caf\xc3', 'latin1'), Buffer.from('\xa9 \xe2\x82', 'latin1'), Buffer.from('\xac', 'latin1')],
      false,
      'text split inside UTF-8 sequences'
    );
    await echoFragmented(
      conn,
      [Buffer.from([0, 1]), Buffer.alloc(0), Buffer.from([2, 0xff])],
      true,
      'binary with an empty middle fragment'
    );

    await echo(conn, pseudoRandomBytes(16 * MIB, 6455), '16 MiB binary');
    // 16 bytes of UTF-8 with 1-, 2-, 3- and 4-byte sequences, repeated to exactly 16 MiB.
    const unit = 'abcdefgé€😀';
    if (Buffer.byteLength(unit) !== 16) throw new Error('unit must be 16 bytes');
    await echo(conn, unit.repeat(MIB), '16 MiB text');

    await ping(conn, Buffer.from('wsloop-ping \x00\xff', 'latin1'));
    await ping(conn, Buffer.from(Array.from({ length: 125 }, (_, i) => i)));
    // Messages still flow after control frames.
    await echo(conn, 'after pings', 'text after pings');

    await closeAndCheck(conn, 1000, 'bye from ws', 1000);
  },

  async 'close-4000'(url) {
    const conn = await openConnection(url);
    await echo(conn, 'before close', 'text before close');
    await closeAndCheck(conn, 4000, 'custom close', 4000);
  },

  async 'invalid-utf8'(url) {
    const conn = await openConnection(url);
    await echo(conn, 'valid first', 'valid text');
    // A Buffer sent with {binary: false} goes out as a text frame, unchecked.
    await conn.send(Buffer.from('bad \xff\xfe text', 'latin1'), { binary: false }, 'send invalid UTF-8 text frame');
    await expectFailure(conn, 1007, 'invalid UTF-8');
  },

  async 'too-big'(url) {
    const conn = await openConnection(url);
    const atLimit = pseudoRandomBytes(TOO_BIG_LIMIT, 1009);
    await echo(conn, atLimit, `binary of ${TOO_BIG_LIMIT} bytes (the limit)`);
    // The server may fail the connection while this is still being written.
    conn.ws.send(Buffer.concat([atLimit, Buffer.from('!')]), { binary: true }, () => {});
    await expectFailure(conn, 1009, `binary of ${TOO_BIG_LIMIT + 1} bytes`);
  }
};

async function main() {
  const args = process.argv.slice(2);
  if (args.length === 4 && args[2] === '--ca') {
    trustedCa = fs.readFileSync(args[3]);
    args.splice(2, 2);
  }
  const [url, name] = args;
  if (args.length !== 2 || !Object.prototype.hasOwnProperty.call(scenarios, name)) {
    console.error(`usage: node client.js URL {${Object.keys(scenarios).join('|')}} [--ca FILE]`);
    return 2;
  }
  console.log(`info: ws ${require('ws/package.json').version}, node ${process.version}, scenario ${name}, ${url}`);
  try {
    await withTimeout(scenarios[name](url), SCENARIO_TIMEOUT, `scenario ${name}`);
  } catch (err) {
    console.error(`MISMATCH: ${err instanceof Mismatch ? err.message : err.stack}`);
    return 1;
  }
  console.log(`interop ok: ${CLIENT} ${name} (${checkCount} checks)`);
  return 0;
}

main().then((code) => {
  // Exit explicitly: a connection left open by a failed scenario must not keep node alive.
  process.exitCode = code;
  setImmediate(() => process.exit(code));
});
