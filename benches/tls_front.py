#!/usr/bin/env python3
"""nginx terminating TLS in front of one plain wsloop server, as one benchmark "server".

    python3 benches/tls_front.py CERT KEY -- wsloop echo --listen 127.0.0.1:0 ...

Starts the backend command (it must print its `listening on ws://127.0.0.1:PORT/` line),
then nginx as one process (`master_process off`: the worker is the process started, so its
CPU time is all of nginx's) on a free port of 127.0.0.1 with TLS 1.2/1.3 and the HTTP/1.1
upgrade proxying of deploy/nginx.conf, and prints `listening on wss://127.0.0.1:PORT/` and
`server pids: NGINX,BACKEND` for compare.py, which then counts both processes' CPU and
memory. Ends both on SIGTERM or SIGINT. Python 3.11, standard library only.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONF = """
daemon off;
master_process off;
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 65536; }}
worker_rlimit_nofile 65536;
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_read_timeout 3600s;
            proxy_buffering off;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    if len(sys.argv) < 5 or sys.argv[3] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    cert, key, backend_cmd = sys.argv[1], sys.argv[2], sys.argv[4:]
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    work = Path(tempfile.mkdtemp(prefix="wsloop-tls-front-"))
    backend = subprocess.Popen(backend_cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    procs = [backend]

    def stop(*_):
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    line = backend.stdout.readline() if backend.stdout else ""
    m = re.search(r"listening on ws://127\.0\.0\.1:(\d+)", line)
    if not m:
        print(f"backend did not listen: {line!r}", file=sys.stderr)
        stop()
    port = free_port()
    (work / "nginx.conf").write_text(CONF.format(dir=work, backend=m.group(1), port=port,
                                                 cert=Path(cert).resolve(),
                                                 key=Path(key).resolve()))
    front = subprocess.Popen([nginx, "-p", str(work), "-c", str(work / "nginx.conf")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.insert(0, front)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if front.poll() is not None:
                print((work / "error.log").read_text(errors="replace"), file=sys.stderr)
                stop()
            time.sleep(0.05)
    print(f"listening on wss://127.0.0.1:{port}/", flush=True)
    print(f"server pids: {front.pid},{backend.pid}", flush=True)
    while all(p.poll() is None for p in procs):
        time.sleep(0.5)
    stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
