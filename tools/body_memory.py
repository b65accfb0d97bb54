"""Peak memory (RSS) of `codeq serve` while it takes the largest request
bodies its default limits allow, for docs/performance.md.

Shapes, each against a fresh server (local mode, default settings,
embedded storage with fsync) in a temporary directory:

  creates      one POST /tasks/batch: 100 tasks with 1 MiB payloads (~105 MB)
  results      one POST /tasks/batch/results: 100 results, each with one
               inline artifact of maxArtifactBytes (10 MiB, ~14 MB of
               base64; ~1.4 GB in all)
  3 x results  three such batches sent at once, by three clients that send
               `Expect: 100-continue` and retry after `Retry-After` on 503

For each shape: the server's RSS before the request (after setup), its
peak during it (VmHWM, the kernel's high-water mark since the server
started), its RSS 10 s after the last answer (with a light request every
200 ms meanwhile, see `settle`), and the largest body.

usage: python3 tools/body_memory.py [path/to/codeq] [shape ...]
       (default target/release/codeq; shapes: creates results 3x-results)
"""
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

CODEQ = "target/release/codeq"
MiB = 1 << 20
MAX_PAYLOAD = MiB  # maxPayloadBytes default
MAX_ARTIFACT = 10 * MiB  # maxArtifactBytes default


class Server:
    """A `codeq serve` in local mode with its own data directory."""

    def __init__(self, **extra_env):
        self.dir = tempfile.TemporaryDirectory(prefix="codeq-memory-")
        self.process = subprocess.Popen(
            [CODEQ, "serve", "--port", "0", "--data-dir", self.dir.name],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "CODEQ_LOG_LEVEL": "warn", **extra_env},
        )
        line = self.process.stdout.readline().decode()
        self.port = int(line.split("http://127.0.0.1:")[1].split()[0])
        credentials = json.load(open(os.path.join(self.dir.name, "credentials.json")))
        self.producer = credentials["producerToken"]
        self.worker = credentials["workerToken"]

    def status(self, field):
        """A memory field of /proc/<pid>/status, in bytes."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(field)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)
        self.dir.cleanup()


def read_response(reader):
    """Status, headers and body of one HTTP/1.1 response."""
    status = int(reader.readline().split()[1])
    headers = {}
    while True:
        line = reader.readline().decode().strip()
        if not line:
            break
        name, value = line.split(":", 1)
        headers[name.strip().lower()] = value.strip()
    body = reader.read(int(headers.get("content-length", 0)))
    return status, headers, body


def request(server, path, token, parts, length, expect=False):
    """POSTs `parts` (an iterable of bytes, `length` in all) on a new
    connection; with `expect`, only after the server asked for the body."""
    connection = socket.create_connection(("127.0.0.1", server.port))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n"
    )
    if expect:
        head += "Expect: 100-continue\r\n"
    connection.sendall((head + "\r\n").encode())
    reader = connection.makefile("rb")
    if expect:
        status, headers, body = read_response(reader)
        if status != 100:
            connection.close()
            return status, headers, body
    for part in parts:
        connection.sendall(part)
    answer = read_response(reader)
    connection.close()
    return answer


def post_json(server, path, token, value):
    body = json.dumps(value).encode()
    status, _, answer = request(server, path, token, [body], len(body))
    return status, json.loads(answer) if answer else None


def joined(prefix, items, suffix):
    """Parts and total length of `prefix` + items joined by commas + `suffix`,
    where each item is itself a list of parts (shared, not copied)."""
    parts = [prefix]
    for n, item in enumerate(items):
        if n:
            parts.append(b",")
        parts.extend(item)
    parts.append(suffix)
    return parts, sum(len(part) for part in parts)


def creates_body():
    payload = {"data": "x" * (MAX_PAYLOAD - 64)}
    item = json.dumps({"command": "memory", "payload": payload}).encode()
    return joined(b'{"tasks":[', [[item]] * 100, b"]}")


def claimed_tasks(server, count):
    """Creates and claims `count` small tasks; returns (id, attempt) pairs."""
    tasks = []
    while len(tasks) < count:
        batch = min(100, count - len(tasks))
        items = [{"command": "memory", "payload": {"n": n}} for n in range(batch)]
        status, _ = post_json(server, "/v1/codeq/tasks/batch", server.producer, {"tasks": items})
        assert status == 200, status
        status, claimed = post_json(
            server, "/v1/codeq/tasks/claim/batch", server.worker, {"commands": ["memory"], "count": batch}
        )
        assert status == 200, status
        tasks += [(task["id"], task["attempts"]) for task in claimed["tasks"]]
    return tasks


ARTIFACT = base64.b64encode(os.urandom(MAX_ARTIFACT))


def results_body(tasks):
    items = []
    for task_id, attempt in tasks:
        before = (
            f'{{"taskId":"{task_id}","status":"COMPLETED","result":{{"ok":true}},"attempt":{attempt},'
            f'"artifacts":[{{"name":"blob.bin","contentType":"application/octet-stream","contentBase64":"'
        ).encode()
        items.append([before, ARTIFACT, b'"}]}'])
    return joined(b'{"results":[', items, b"]}")


def settle(server):
    """Lets 10 s pass with a light request every 200 ms. The allocator
    (mimalloc) gives freed memory back to the system lazily, on later
    activity and after a delay, in practice within 3 to 10 s here."""
    for _ in range(50):
        time.sleep(0.2)
        connection = socket.create_connection(("127.0.0.1", server.port))
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        read_response(connection.makefile("rb"))
        connection.close()


def send_until_accepted(server, path, token, parts, length, outcome):
    """Sends with `Expect: 100-continue`, again after `Retry-After` on 503."""
    refused = 0
    while True:
        status, headers, body = request(server, path, token, parts, length, expect=True)
        if status != 503:
            break
        refused += 1
        time.sleep(int(headers.get("retry-after", "1")))
    outcome.append((status, refused, json.loads(body)))


def run(shape):
    server = Server()
    try:
        if shape == "creates":
            uploads = [("/v1/codeq/tasks/batch", server.producer, *creates_body())]
        else:
            clients = 3 if shape == "3x-results" else 1
            tasks = claimed_tasks(server, 100 * clients)
            uploads = [
                ("/v1/codeq/tasks/batch/results", server.worker, *results_body(tasks[n * 100 : (n + 1) * 100]))
                for n in range(clients)
            ]
        before = server.status("VmRSS")
        outcome = []
        started = time.time()
        threads = [
            threading.Thread(target=send_until_accepted, args=(server, path, token, parts, length, outcome))
            for path, token, parts, length in uploads
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.time() - started
        peak = server.status("VmHWM")
        settle(server)
        after = server.status("VmRSS")
        for status, refused, answer in outcome:
            assert status == 200, (status, answer)
            failed = [item for item in answer["results"] if "error" in item]
            assert not failed, failed[:1]
        body = max(length for _, _, _, length in uploads)
        refusals = sum(refused for _, refused, _ in outcome)
        print(
            f"{shape:<11} body {body / 1e6:8.1f} MB x{len(uploads)}  "
            f"RSS before {before / 1e6:7.1f} MB  peak {peak / 1e6:7.1f} MB "
            f"({peak / body:.2f}x the body)  after {after / 1e6:7.1f} MB  "
            f"503s {refusals}  {elapsed:.1f} s",
            flush=True,
        )
    finally:
        server.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        CODEQ = sys.argv[1]
    for shape in sys.argv[2:] or ["creates", "results", "3x-results"]:
        run(shape)
