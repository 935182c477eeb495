#!/usr/bin/env python3
"""Interop client: drives `wsloop echo` with the Python `websockets` package (asyncio API).

Usage: client.py URL SCENARIO [--ca FILE]

URL is ws:// or wss://; for wss://, --ca names the PEM file of the CA to trust (the tests'
own CA), instead of the system's roots.

Scenarios (each on a fresh connection to URL):
  session       text (ASCII, non-ASCII, empty), binary (and empty), fragmented messages
                (text split inside a UTF-8 sequence, binary from an async iterable),
                16 MiB binary and 16 MiB text, pings with payloads awaiting their pongs,
                then a close 1000 with a reason: the server must echo 1000 and close TCP.
  close-4000    one echo, then a close 4000: the server must echo 4000.
  invalid-utf8  a text frame that is not UTF-8 (websockets sends bytes with text=True
                unchecked): the server must fail the connection with 1007.
  too-big       for a server started with `--max-message 65536`: 65536 bytes are echoed,
                65537 bytes make the server fail the connection with 1009.
  deflate       for a server started with `--deflate --deflate-threshold 0`: one connection
                per permessage-deflate parameter set (RFC 7692 §7.1), each checking the
                server's answer and echoing 16 B, 4 KiB of JSON-like text, 64 KiB and a
                fragmented message, compressed both ways.

Prints one `ok: ...` line per check and, when every check passed, the summary line
`interop ok: python-websockets SCENARIO (N checks)`. Exits 1 on the first mismatch
(reported on stderr as `MISMATCH: ...`), 2 on a usage error. Needs websockets >= 13.
"""

import asyncio
import hashlib
import random
import ssl
import sys
import time

import websockets
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

CLIENT = "python-websockets"
MIB = 1024 * 1024
# Bound on every single step (connect, one echo, one pong).
STEP_TIMEOUT = 30.0
# websockets waits this long for the server to close TCP after the closing handshake.
CLOSE_TIMEOUT = 10.0
# A close that takes longer than this means the server did not close TCP: the client
# gave up waiting (RFC 6455 §7.1.1: the server closes the TCP connection first).
CLOSE_TCP_BOUND = 8.0
# Bound on a whole scenario, so that the script never hangs by itself.
SCENARIO_TIMEOUT = 100.0
# Limit configured for the too-big scenario (`wsloop echo --max-message 65536`).
TOO_BIG_LIMIT = 65536


class Mismatch(Exception):
    """A behaviour of the server that differs from what the scenario expects."""


class Checks:
    """Counts and prints passed checks."""

    def __init__(self):
        self.count = 0

    def ok(self, what):
        self.count += 1
        print(f"ok: {what}", flush=True)

    def expect(self, cond, what, detail=""):
        if not cond:
            raise Mismatch(f"{what}: {detail}" if detail else what)
        self.ok(what)


def describe(data):
    """A short description of a payload: itself when small, else length and digest."""
    if data is None:
        return "None"
    kind = type(data).__name__
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) <= 64:
        return f"{kind} {data!r}"
    return f"{kind} of {len(raw)} bytes, sha256 {hashlib.sha256(raw).hexdigest()[:16]}"


async def step(awaitable, what):
    """Awaits one step of a scenario within STEP_TIMEOUT."""
    try:
        return await asyncio.wait_for(awaitable, STEP_TIMEOUT)
    except asyncio.TimeoutError:
        raise Mismatch(f"{what}: no answer within {STEP_TIMEOUT:.0f} s") from None
    except ConnectionClosed as exc:
        raise Mismatch(f"{what}: connection closed unexpectedly ({close_info(exc)})") from None


def close_info(exc):
    """The close frames of a ConnectionClosed exception, for messages."""
    rcvd = f"{exc.rcvd.code} {exc.rcvd.reason!r}" if exc.rcvd else "none"
    sent = f"{exc.sent.code} {exc.sent.reason!r}" if exc.sent else "none"
    return f"close received: {rcvd}, close sent: {sent}"


# The TLS context of wss:// connections (None: the system's roots), set from --ca.
TLS_CONTEXT = None


async def open_connection(url, checks, **options):
    if url.startswith("wss://") and TLS_CONTEXT is not None:
        options["ssl"] = TLS_CONTEXT
    ws = await step(
        connect(
            url,
            **options,
            max_size=32 * MIB,
            ping_interval=None,  # no keepalive pings: only the pings the scenario sends
            open_timeout=STEP_TIMEOUT,
            close_timeout=CLOSE_TIMEOUT,
        ),
        "opening handshake",
    )
    checks.expect(ws.response.status_code == 101, "handshake answered 101")
    ext = ws.response.headers.get("Sec-WebSocket-Extensions")
    print(f"info: server extensions: {ext!r}", flush=True)
    return ws


async def echo(ws, checks, message, what, text=None, expected=None):
    """Sends `message` and checks that the next message received equals `expected`."""
    if expected is None:
        expected = message
    if text is None:
        await step(ws.send(message), f"send {what}")
    else:
        await step(ws.send(message, text=text), f"send {what}")
    got = await step(ws.recv(), f"echo of {what}")
    checks.expect(
        type(got) is type(expected) and got == expected,
        f"echo of {what}",
        f"expected {describe(expected)}, got {describe(got)}",
    )


async def echo_fragmented(ws, checks, message, what, expected):
    """Sends a fragmented message and checks that the echo is one frame equal to `expected`."""
    await step(ws.send(message, text=isinstance(expected, str)), f"send {what}")

    async def collect():
        return [frag async for frag in ws.recv_streaming()]

    frames = await step(collect(), f"echo of {what}")
    joined = ("" if isinstance(expected, str) else b"").join(frames)
    checks.expect(
        type(joined) is type(expected) and joined == expected,
        f"echo of {what}",
        f"expected {describe(expected)}, got {describe(joined)}",
    )
    checks.expect(
        len(frames) == 1,
        f"echo of {what} is one unfragmented frame",
        f"got {len(frames)} frames",
    )


async def close_and_check(ws, checks, code, reason, expected_code):
    """Starts the closing handshake and checks the code the server sent back."""
    started = time.monotonic()
    await asyncio.wait_for(ws.close(code, reason), CLOSE_TIMEOUT + STEP_TIMEOUT)
    elapsed = time.monotonic() - started
    rcvd = ws.protocol.close_rcvd
    checks.expect(rcvd is not None, f"server answered close {code} with a close frame")
    checks.expect(
        rcvd.code == expected_code,
        f"server echoed close code {expected_code}",
        f"got {rcvd.code} reason {rcvd.reason!r}",
    )
    print(f"info: server close reason: {rcvd.reason!r}", flush=True)
    checks.expect(
        elapsed < CLOSE_TCP_BOUND,
        "server closed TCP after the closing handshake",
        f"close took {elapsed:.1f} s",
    )


async def expect_failure(ws, checks, expected_code, what):
    """Expects the server to fail the connection with `expected_code`."""
    started = time.monotonic()
    try:
        got = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
    except asyncio.TimeoutError:
        raise Mismatch(f"{what}: server neither answered nor closed") from None
    except ConnectionClosed as exc:
        checks.expect(
            exc.rcvd is not None,
            f"{what}: server sent a close frame",
            f"connection ended without one ({close_info(exc)})",
        )
        checks.expect(
            exc.rcvd.code == expected_code,
            f"{what}: server closed with {expected_code}",
            f"got {close_info(exc)}",
        )
        print(f"info: server close reason: {exc.rcvd.reason!r}", flush=True)
    else:
        raise Mismatch(f"{what}: expected close {expected_code}, got message {describe(got)}")
    await asyncio.wait_for(ws.wait_closed(), CLOSE_TIMEOUT + STEP_TIMEOUT)
    elapsed = time.monotonic() - started
    checks.expect(
        elapsed < CLOSE_TCP_BOUND,
        f"{what}: server closed TCP",
        f"took {elapsed:.1f} s",
    )


async def scenario_session(url, checks):
    ws = await open_connection(url, checks)
    await echo(ws, checks, "hello, wsloop", "ASCII text")
    await echo(ws, checks, "héllo wörld — ☃ 😀 日本語", "non-ASCII text")
    await echo(ws, checks, "", "empty text")
    await echo(ws, checks, bytes(range(256)), "binary 0..255")
    await echo(ws, checks, b"", "empty binary")

    await echo_fragmented(
        ws, checks, ["frag", "mented ", "text"], "text in 3 fragments", "fragmented text"
    )
    # "café €" split inside the two-byte é and the three-byte €: the server must validate
    # UTF-8 across fragment boundaries and still accept it.
    await echo_fragmented(
        ws,
        checks,
        [b"caf\xc3", b"\xa9 \xe2\x82", b"\xac"],
        "text split inside UTF-8 sequences",
        "café €",
    )

    async def binary_fragments():
        for frag in (b"\x00\x01", b"", b"\x02\xff"):
            await asyncio.sleep(0)
            yield frag

    await echo_fragmented(
        ws, checks, binary_fragments(), "binary from an async iterable", b"\x00\x01\x02\xff"
    )

    big_binary = random.Random(6455).randbytes(16 * MIB)
    await echo(ws, checks, big_binary, "16 MiB binary")
    # 16 bytes of UTF-8 with 1-, 2-, 3- and 4-byte sequences, repeated to exactly 16 MiB.
    unit = "abcdefgé€😀"
    assert len(unit.encode()) == 16
    big_text = unit * (MIB)
    await echo(ws, checks, big_text, "16 MiB text")

    for payload in (b"wsloop-ping \x00\xff", bytes(range(125))):
        # websockets resolves the waiter only on a pong whose payload equals the ping's.
        pong = await step(ws.ping(payload), "send ping")
        await step(pong, f"pong for a ping of {len(payload)} bytes")
        checks.ok(f"pong echoed the {len(payload)}-byte ping payload")
    # Messages still flow after control frames.
    await echo(ws, checks, "after pings", "text after pings")

    await close_and_check(ws, checks, 1000, "bye from websockets", 1000)


async def scenario_close_4000(url, checks):
    ws = await open_connection(url, checks)
    await echo(ws, checks, "before close", "text before close")
    await close_and_check(ws, checks, 4000, "custom close", 4000)


async def scenario_invalid_utf8(url, checks):
    ws = await open_connection(url, checks)
    await echo(ws, checks, "valid first", "valid text")
    # send(bytes, text=True) puts the bytes in a text frame without checking them.
    await step(ws.send(b"bad \xff\xfe text", text=True), "send invalid UTF-8 text frame")
    await expect_failure(ws, checks, 1007, "invalid UTF-8")


async def scenario_too_big(url, checks):
    ws = await open_connection(url, checks)
    at_limit = random.Random(1009).randbytes(TOO_BIG_LIMIT)
    await echo(ws, checks, at_limit, f"binary of {TOO_BIG_LIMIT} bytes (the limit)")
    await step(ws.send(at_limit + b"!"), "send binary over the limit")
    await expect_failure(ws, checks, 1009, f"binary of {TOO_BIG_LIMIT + 1} bytes")


# (client offer, the server's expected answer) for each parameter set. websockets offers
# client_max_window_bits without a value unless told otherwise; the server answers its 15.
DEFLATE_SETS = [
    ({}, "permessage-deflate; client_max_window_bits=15"),
    (
        {"server_no_context_takeover": True},
        "permessage-deflate; server_no_context_takeover; client_max_window_bits=15",
    ),
    (
        {"client_no_context_takeover": True},
        "permessage-deflate; client_no_context_takeover; client_max_window_bits=15",
    ),
    (
        {"server_max_window_bits": 10},
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; "
        "client_max_window_bits=15",
    ),
    ({"client_max_window_bits": 9}, "permessage-deflate"),
    ({"client_max_window_bits": None}, "permessage-deflate"),
]


async def scenario_deflate(url, checks):
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

    json_like = "".join(
        f'{{"id":{i},"user":"u{i % 97}","ok":true,"text":"hello"}},' for i in range(200)
    )[:4096]
    for params, answer in DEFLATE_SETS:
        factory = ClientPerMessageDeflateFactory(**params)
        ws = await open_connection(url, checks, extensions=[factory], compression=None)
        got = ws.response.headers.get("Sec-WebSocket-Extensions")
        checks.expect(got == answer, f"answer to {params}", f"got {got!r}")
        await echo(ws, checks, "sixteen bytes!!!", f"16 B text with {params}")
        await echo(ws, checks, json_like, f"4 KiB JSON-like text with {params}")
        await echo(ws, checks, random.Random(7692).randbytes(65536), f"64 KiB binary with {params}")
        await echo_fragmented(
            ws, checks, ["frag", "mented ", "text"], f"fragments with {params}", "fragmented text"
        )
        await close_and_check(ws, checks, 1000, "bye", 1000)


SCENARIOS = {
    "deflate": scenario_deflate,
    "session": scenario_session,
    "close-4000": scenario_close_4000,
    "invalid-utf8": scenario_invalid_utf8,
    "too-big": scenario_too_big,
}


async def run(url, name):
    checks = Checks()
    await asyncio.wait_for(SCENARIOS[name](url, checks), SCENARIO_TIMEOUT)
    return checks.count


def main():
    global TLS_CONTEXT
    args = sys.argv[1:]
    if len(args) == 4 and args[2] == "--ca":
        TLS_CONTEXT = ssl.create_default_context(cafile=args[3])
        args = args[:2]
    if len(args) != 2 or args[1] not in SCENARIOS:
        print(f"usage: {sys.argv[0]} URL {{{'|'.join(SCENARIOS)}}} [--ca FILE]", file=sys.stderr)
        return 2
    url, name = args
    print(f"info: websockets {websockets.__version__}, scenario {name}, {url}", flush=True)
    try:
        count = asyncio.run(run(url, name))
    except Mismatch as exc:
        print(f"MISMATCH: {exc}", file=sys.stderr, flush=True)
        return 1
    except (asyncio.TimeoutError, OSError, websockets.exceptions.WebSocketException) as exc:
        print(f"MISMATCH: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"interop ok: {CLIENT} {name} ({count} checks)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
