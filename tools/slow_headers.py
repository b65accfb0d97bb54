"""A flood of slow-header sockets against `codeq serve` started under a low
open-file limit: is a legitimate client still served, and how soon?

Starts the server (local mode, default settings) with the soft
RLIMIT_NOFILE set to --soft (1024, as `ulimit -Sn 1024` would) and the
hard one to --hard (default: this process's hard limit), opens --sockets
connections that each send half a request head and then nothing, and
times an authenticated request from a new client while they are open.
Then it counts how many of the flood the server closed within the head
timeout (10 s by default) plus a few seconds.

usage: python3 tools/slow_headers.py [--codeq PATH] [--sockets N] [--soft N] [--hard N]
"""
import argparse
import json
import os
import resource
import socket
import subprocess
import tempfile
import time

parser = argparse.ArgumentParser()
parser.add_argument("--codeq", default="target/release/codeq")
parser.add_argument("--sockets", type=int, default=1010)
parser.add_argument("--soft", type=int, default=1024)
parser.add_argument("--hard", type=int, default=resource.getrlimit(resource.RLIMIT_NOFILE)[1])
arguments = parser.parse_args()

# The flood needs more descriptors than 1024 on this side too.
own_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (own_hard, own_hard))


def low_limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (arguments.soft, arguments.hard))


data_dir = tempfile.TemporaryDirectory(prefix="codeq-slow-headers-")
log = tempfile.TemporaryFile()
server = subprocess.Popen(
    [arguments.codeq, "serve", "--port", "0", "--data-dir", data_dir.name],
    stdout=subprocess.PIPE,
    stderr=log,
    env={**os.environ, "CODEQ_LOG_FORMAT": "json"},
    preexec_fn=low_limit,
)
try:
    line = server.stdout.readline().decode()
    port = int(line.split("http://127.0.0.1:")[1].split()[0])
    token = json.load(open(os.path.join(data_dir.name, "credentials.json")))["producerToken"]
    print(f"server: soft limit {arguments.soft}, hard limit {arguments.hard}; {arguments.sockets} slow-header sockets")

    opening = time.monotonic()
    flood = []
    for _ in range(arguments.sockets):
        connection = socket.create_connection(("127.0.0.1", port))
        connection.sendall(b"GET /v1/codeq/admin/queues HTTP/1.1\r\nHost: flood\r\n")
        flood.append(connection)
    print(f"flood open: {len(flood)} sockets, each with half a request head, in {time.monotonic() - opening:.2f} s")

    started = time.monotonic()
    client = socket.create_connection(("127.0.0.1", port))
    client.settimeout(60)
    client.sendall(
        f"GET /v1/codeq/admin/queues HTTP/1.1\r\nHost: client\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    status_line = client.makefile("rb").readline().decode().strip()
    served = time.monotonic() - started
    print(f"legitimate client: {status_line!r} after {served:.3f} s")

    closed = 0
    deadline = time.monotonic() + 15
    for connection in flood:
        connection.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            while connection.recv(4096):
                pass
            closed += 1
        except (TimeoutError, socket.timeout):
            pass
        except ConnectionError:
            closed += 1
    print(f"flood closed by the server within 15 s: {closed} of {len(flood)}")
finally:
    server.terminate()
    server.wait(timeout=60)
    log.seek(0)
    for entry in log.read().decode().splitlines():
        message = json.loads(entry).get("fields", {}).get("message", "")
        if "open-file limit" in message or "connection limit" in message:
            print("server log:", message)
    data_dir.cleanup()
