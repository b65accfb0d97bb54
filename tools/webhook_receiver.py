"""A webhook receiver for measurements: answers every POST with 200 after
--sleep seconds (0: at once) and counts what it got. Listens on 127.0.0.1.

It prints its URL (http://127.0.0.1:PORT/hook) on the first line of
stdout. `GET /count` answers {"requests": N, "tasks": M}: N callbacks
received, M distinct task ids among them (at-least-once delivery may
repeat one). On SIGINT or SIGTERM it prints the same counts and exits.

usage: python3 tools/webhook_receiver.py [--port N] [--sleep SECONDS]
"""
import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, default=0, help="0: any free port")
parser.add_argument("--sleep", type=float, default=0.0, help="seconds before each answer")
arguments = parser.parse_args()

lock = threading.Lock()
requests = 0
tasks = set()


def counts():
    with lock:
        return {"requests": requests, "tasks": len(tasks)}


class Handler(BaseHTTPRequestHandler):
    # Keep-alive, as the server's webhook client expects.
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global requests
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            task_id = json.loads(body).get("taskId")
        except ValueError:
            task_id = None
        with lock:
            requests += 1
            tasks.add(task_id)
        if arguments.sleep > 0:
            time.sleep(arguments.sleep)
        self.answer(b"")

    def do_GET(self):
        self.answer(json.dumps(counts()).encode())

    def answer(self, body):
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the sender gave up waiting (its timeout)

    def log_message(self, *_):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


server = Server(("127.0.0.1", arguments.port), Handler)
print(f"http://127.0.0.1:{server.server_address[1]}/hook", flush=True)


def stop(*_):
    print(json.dumps(counts()), flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
server.serve_forever()
