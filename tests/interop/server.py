#!/usr/bin/env python3
"""Interop server: an echo server of the Python `websockets` package with permessage-deflate,
for the client side of wsloop (`wsloop client --deflate` and the library client,
tests/client_deflate.rs), and the Python peer of benches/compare_deflate.py.

Usage: server.py PARAMETERS

Parameter sets (what the server accepts of a client's offer, RFC 7692 §7.1):
  off                  no permessage-deflate (the benchmarks' "compression off",
                       benches/compare_deflate.py)
  default              websockets' own `compression="deflate"`: windows of 12 bits both ways
                       (the client's only when it offered client_max_window_bits)
  no-context-takeover  server_no_context_takeover and client_no_context_takeover, full windows
  small-windows        server_max_window_bits=9 and client_max_window_bits=9: the client may
                       refer back at most 512 bytes

Listens on 127.0.0.1 on a free port, prints `listening on ws://127.0.0.1:PORT/` when ready and
echoes every message, text or binary, until it is killed. Exits 2 on a usage error.
"""

import asyncio
import sys

from websockets.asyncio.server import serve
from websockets.extensions.permessage_deflate import (
    ServerPerMessageDeflateFactory,
    enable_server_permessage_deflate,
)

PARAMETERS = {
    "off": [],
    "default": enable_server_permessage_deflate(None),
    "no-context-takeover": [
        ServerPerMessageDeflateFactory(
            server_no_context_takeover=True, client_no_context_takeover=True
        )
    ],
    "small-windows": [
        ServerPerMessageDeflateFactory(server_max_window_bits=9, client_max_window_bits=9)
    ],
}


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def main(extensions):
    async with serve(
        echo, "127.0.0.1", 0, extensions=extensions, compression=None, max_size=None
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on ws://127.0.0.1:{port}/", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in PARAMETERS:
        print(f"usage: {sys.argv[0]} {'|'.join(PARAMETERS)}", file=sys.stderr)
        sys.exit(2)
    asyncio.run(main(PARAMETERS[sys.argv[1]]))
