"""Loads N pending tasks (200-byte payloads) into a running local-mode codeQ
server with batch creates, for the memory and recovery measurements of
docs/performance.md.

usage: python3 tools/load_pending.py N [port] [data-dir]
"""
import http.client
import json
import sys
import threading
import time

count = int(sys.argv[1])
port = int(sys.argv[2]) if len(sys.argv) > 2 else 8080
data_dir = sys.argv[3] if len(sys.argv) > 3 else "codeq-data"
token = json.load(open(f"{data_dir}/credentials.json"))["producerToken"]
body = json.dumps({"tasks": [{"command": "mem", "payload": {"data": "x" * 188}}] * 100})
headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def load(requests):
    connection = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(requests):
        connection.request("POST", "/v1/codeq/tasks/batch", body, headers)
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status


started = time.time()
threads = [threading.Thread(target=load, args=(count // 400,)) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(f"loaded {count // 400 * 400} tasks in {time.time() - started:.1f} s")
