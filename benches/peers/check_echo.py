#!/usr/bin/env python3
"""Checks that a peer echo server echoes correctly, before it is benchmarked.

Usage:
    python3 check_echo.py COMMAND [ARGS...]           # a WebSocket peer
    python3 check_echo.py --raw-bytes COMMAND [ARGS...]  # raw-echo --mode bytes

Starts COMMAND, reads `listening on HOST:PORT` from its stdout, runs the checks, stops it.

A WebSocket peer is driven with the Python `websockets` package (a strict client): text
(ASCII and not), binary, empty messages, 1 MiB binary and about 1 MiB of text, a fragmented
message, a ping, then a close 1000 that must come back as 1000.

`raw-echo --mode bytes` echoes bytes unchanged (the client gets its own masked frames back),
which no strict client accepts; --raw-bytes checks it with a socket: the 101 and its
Sec-WebSocket-Accept, then masked frames of 16 bytes and 1 MiB come back byte for byte.

Prints `ok: ...` per check and `echo ok: COMMAND (N checks)`; exits 1 on the first failure.
"""

import base64
import hashlib
import os
import socket
import subprocess
import sys

from websockets.sync.client import connect

MIB = 1024 * 1024
TIMEOUT = 30
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

checks = 0


def ok(what):
    global checks
    checks += 1
    print(f"ok: {what}", flush=True)


def expect(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr, flush=True)
        sys.exit(1)
    ok(what)


def start(command):
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    prefix = "listening on "
    if not line.startswith(prefix):
        proc.kill()
        print(f"FAILED: expected '{prefix}HOST:PORT', got {line!r}", file=sys.stderr)
        sys.exit(1)
    host, port = line[len(prefix):].rsplit(":", 1)
    ok(f"started, {line}")
    return proc, host, int(port)


def check_websocket(host, port):
    url = f"ws://{host}:{port}/"
    with connect(url, compression=None, max_size=4 * MIB, open_timeout=TIMEOUT,
                 ping_interval=None, close_timeout=TIMEOUT) as ws:
        for message in ["hello", "κόσμε 𝄞", "", b"\x00\x01\xfe\xff", b"", bytes(range(256))]:
            ws.send(message)
            echo = ws.recv(timeout=TIMEOUT)
            expect(echo == message, f"echo of {type(message).__name__} of {len(message)}")
        big = os.urandom(MIB)
        ws.send(big)
        expect(ws.recv(timeout=TIMEOUT) == big, "echo of 1 MiB binary")
        # About 1 MiB of text with 3-byte sequences, cut at a character boundary.
        text = ("wsloop ✓ " * (MIB // 11 + 1)).encode()[:MIB].decode("utf-8", "ignore")
        ws.send(text)
        expect(ws.recv(timeout=TIMEOUT) == text, f"echo of {len(text.encode())} bytes of text")
        # An iterable is sent as one message, one fragment per item (str items cannot split a
        # UTF-8 sequence, so each fragment is valid text by itself).
        ws.send(["frag", "ment", "ed ✓"])
        expect(ws.recv(timeout=TIMEOUT) == "fragmented ✓", "echo of a fragmented text message")
        pong = ws.ping(b"are you there")
        expect(pong.wait(TIMEOUT), "pong for a ping")
        ws.send("last")
        expect(ws.recv(timeout=TIMEOUT) == "last", "echo after the ping")
        ws.close(1000, "bye")
        code = ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None
        expect(code == 1000, f"close 1000 echoed (got {code})")


def masked_frame(opcode, payload, key=b"\x12\x34\x56\x78"):
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + body


def read_exactly(sock, n):
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(min(n - len(data), 1 << 16))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def check_raw_bytes(host, port):
    key = base64.b64encode(os.urandom(16))
    sock = socket.create_connection((host, port), timeout=TIMEOUT)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            break
        head += chunk
    expect(head.startswith(b"HTTP/1.1 101 "), "101 Switching Protocols")
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    expect(b"Sec-WebSocket-Accept: " + accept + b"\r\n" in head, "Sec-WebSocket-Accept")
    for payload in [b"0123456789abcdef", os.urandom(MIB)]:
        frame = masked_frame(0x2, payload)
        sock.sendall(frame)
        expect(read_exactly(sock, len(frame)) == frame, f"{len(frame)} bytes echoed unchanged")
    sock.close()


def main():
    args = sys.argv[1:]
    raw = args[:1] == ["--raw-bytes"]
    command = args[1:] if raw else args
    if not command:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    proc, host, port = start(command)
    try:
        (check_raw_bytes if raw else check_websocket)(host, port)
    finally:
        proc.kill()
        proc.wait()
    print(f"echo ok: {' '.join(command)} ({checks} checks)")


if __name__ == "__main__":
    main()
