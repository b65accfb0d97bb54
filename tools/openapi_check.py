#!/usr/bin/env python3
"""The OpenAPI document and the metrics, checked by other people's tools.

Starts the real `codeq serve` (local mode, port 0, a temporary data
directory), then:

1. validates `/openapi.json` as OpenAPI 3.1 with openapi-spec-validator;
2. generates a Python client from it with openapi-python-client and, with
   that client alone, creates a task, claims it, submits its result and
   reads it back (the generated models parse every answer);
3. parses `/metrics` in the OpenMetrics format with the Prometheus
   project's own Python parser and checks the task's counters;
4. calls every operation for real, with good and bad input, and checks
   each answer against the document: its status is one the operation
   declares, its body fits the declared schema (jsonschema, the
   validator's own dependency), and the headers the server always sends
   there are declared. Every request body sent to be accepted fits its
   declared schema too.

Needs the packages of tools/requirements-ci.txt. `.ci/run` installs them
in a virtual environment and runs this after the Rust tests.

Usage: openapi_check.py PATH/TO/codeq
"""

import base64
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from openapi_spec_validator.versions import consts as versions
from openapi_spec_validator.versions.shortcuts import get_spec_version
from prometheus_client.openmetrics.parser import text_string_to_metric_families

COMMAND = "GENERATED_CLIENT"


def start_server(binary: str, work: Path) -> tuple[subprocess.Popen, dict]:
    """`codeq serve` in local mode; its credentials once it listens."""
    data = work / "data"
    server = subprocess.Popen(
        [binary, "serve", "--port", "0", "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=open(work / "serve.log", "w"),
        text=True,
    )
    banner = server.stdout.readline()  # printed once it listens
    if "listening on" not in banner:
        server.kill()
        sys.exit(f"codeq serve did not start: {banner!r}, see {work / 'serve.log'}")
    credentials = json.loads((data / "credentials.json").read_text())
    return server, credentials


def fetch(url: str, accept: str = "*/*") -> str:
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def check_document(base: str, work: Path) -> Path:
    document = json.loads(fetch(f"{base}/openapi.json"))
    validate(document)  # raises on any violation
    version = get_spec_version(document)
    assert version == versions.OPENAPIV31, f"not OpenAPI 3.1: {version}"
    path = work / "openapi.json"
    path.write_text(json.dumps(document))
    operations = sum(len(item) for item in document["paths"].values())
    print(f"openapi: valid OpenAPI 3.1, {operations} operations")
    return path


def generate_client(document: Path, work: Path):
    """Generates the client package `codeq_client` and imports it."""
    output = work / "codeq_client"
    subprocess.run(
        [
            sys.executable, "-m", "openapi_python_client", "generate",
            "--path", str(document), "--meta", "none", "--output-path", str(output),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )
    sys.path.insert(0, str(work))
    return importlib.import_module("codeq_client")


def run_flow(client_package, base: str, credentials: dict) -> str:
    """Create, claim, result and read back, with the generated client only."""
    api = lambda name: importlib.import_module(f"codeq_client.api.{name}")
    models = importlib.import_module("codeq_client.models")
    producer = client_package.AuthenticatedClient(base_url=base, token=credentials["producerToken"])
    worker = client_package.AuthenticatedClient(base_url=base, token=credentials["workerToken"])

    created = api("producers.create_task").sync_detailed(
        client=producer,
        body=models.CreateTask(command=COMMAND, payload={"jobId": "j-1"}, priority=5),
    )
    assert created.status_code == 202, created
    task = created.parsed
    assert isinstance(task, models.Task) and task.status == models.TaskStatus.PENDING, task
    assert task.payload == '{"jobId":"j-1"}', task.payload

    claimed = api("workers.claim_task").sync(
        client=worker, body=models.Claim(commands=[COMMAND], lease_seconds=60)
    )
    assert isinstance(claimed, models.Task), claimed
    assert claimed.id == task.id and claimed.status == models.TaskStatus.IN_PROGRESS

    result = {"url": "s3://bucket/j-1.wav"}
    stored = api("workers.submit_result").sync(
        id=task.id,
        client=worker,
        body=models.SubmitResult(status=models.ResultStatus.COMPLETED, result=result, attempt=claimed.attempts),
    )
    assert isinstance(stored, models.ResultRecord), stored
    assert stored.status == models.ResultStatus.COMPLETED

    read = api("tasks.get_result").sync(id=task.id, client=producer)
    assert isinstance(read, models.TaskWithResult), read
    assert read.task.status == models.TaskStatus.COMPLETED
    assert read.result.result == {"url": "s3://bucket/j-1.wav"}

    refused = api("tasks.get_task").sync(id=task.id, client=client_package.Client(base_url=base))
    assert isinstance(refused, models.Error) and refused.code == "missing_token", refused
    print(f"generated client: created, claimed and completed task {task.id}")
    return task.id


def check_metrics(base: str) -> None:
    text = fetch(f"{base}/metrics", accept="application/openmetrics-text; version=1.0.0")
    families = {family.name: family for family in text_string_to_metric_families(text)}
    wanted = {
        "codeq_task_created": "counter",
        "codeq_task_claimed": "counter",
        "codeq_task_completed": "counter",
        "codeq_task_processing_latency_seconds": "histogram",
        "codeq_lease_expired": "counter",
        "codeq_webhook_deliveries": "counter",
        "codeq_queue_depth": "gauge",
        "codeq_dlq_depth": "gauge",
        "codeq_subscriptions_active": "gauge",
        "codeq_http_requests": "counter",
        "codeq_http_request_duration_seconds": "histogram",
    }
    for name, kind in wanted.items():
        assert name in families, f"{name} missing"
        assert families[name].type == kind, f"{name} is a {families[name].type}"

    def value(family: str, sample: str, **labels) -> float:
        found = [s.value for s in families[family].samples if s.name == sample and s.labels == labels]
        assert len(found) == 1, (family, labels, families[family].samples)
        return found[0]

    command = {"command": COMMAND}
    assert value("codeq_task_created", "codeq_task_created_total", **command) == 1
    assert value("codeq_task_claimed", "codeq_task_claimed_total", **command) == 1
    done = {"command": COMMAND, "status": "COMPLETED"}
    assert value("codeq_task_completed", "codeq_task_completed_total", **done) == 1
    latency = "codeq_task_processing_latency_seconds"
    assert value(latency, f"{latency}_count", **done) == 1
    print(f"metrics: {len(families)} families parsed as OpenMetrics")


class Answers:
    """Calls the server and checks each answer against the document."""

    def __init__(self, base: str, document: dict, credentials: dict):
        self.base = base
        self.document = document
        self.tokens = {
            "producer": credentials["producerToken"],
            "worker": credentials["workerToken"],
            "admin": credentials.get("adminToken", credentials["producerToken"]),
            None: None,
        }
        self.checked: set[tuple[str, str, str]] = set()

    def schema_check(self, schema: dict, value, what: str) -> None:
        # The document's components at the root, so `#/components/...` resolves.
        rooted = {**schema, "components": self.document["components"]}
        checker = Draft202012Validator.FORMAT_CHECKER  # date-time, uuid, ...
        errors = sorted(Draft202012Validator(rooted, format_checker=checker).iter_errors(value), key=str)
        assert not errors, f"{what}: {errors[0].message} at {list(errors[0].absolute_path)}: {value!r}"

    def call(self, method: str, template: str, status: int, *, token="producer", path=None,
             body=None, raw: bytes | None = None, accept="application/json", fits=True, **values):
        """One call; `status` is the one expected. Returns the parsed body.
        A body sent to be accepted must fit the document, unless `fits` is
        false (a batch with an item meant to be refused)."""
        operation = self.document["paths"][template][method.lower()]
        concrete = (path or template).format(**values)
        what = f"{method} {template} -> {status}"
        if body is not None and status < 300 and fits:
            declared = operation["requestBody"]["content"]["application/json"]["schema"]
            self.schema_check(declared, body, f"{what}: the request")
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Accept": accept}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.tokens[token]:
            headers["Authorization"] = f"Bearer {self.tokens[token]}"
        request = urllib.request.Request(self.base + concrete, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                got, answer_headers, content = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            got, answer_headers, content = error.code, error.headers, error.read()
        assert got == status, f"{what}: got {got}: {content[:300]!r}"
        responses = operation["responses"]
        assert str(status) in responses, f"{what}: status not declared ({sorted(responses)})"
        declared = responses[str(status)]
        for name in ["X-Request-Id"] + (["WWW-Authenticate"] if status == 401 else []):
            assert name in answer_headers, f"{what}: no {name} header"
            assert name in declared.get("headers", {}), f"{what}: {name} sent but not declared"
        for name in ("Retry-After", "Idempotent-Replayed", "Content-Disposition"):
            if name in answer_headers:
                assert name in declared.get("headers", {}), f"{what}: {name} sent but not declared"
        content_types = declared.get("content", {})
        if not content_types:
            assert not content, f"{what}: a body where none is declared: {content[:100]!r}"
            self.checked.add((method, template, str(status)))
            return None
        media = answer_headers.get("Content-Type", "").split(";")[0].strip()
        key = media if media in content_types else "*/*"
        assert key in content_types, f"{what}: {media} not among {sorted(content_types)}"
        parsed = json.loads(content) if media == "application/json" else content
        if media == "application/json":
            self.schema_check(content_types[key]["schema"], parsed, what)
        self.checked.add((method, template, str(status)))
        return parsed


def check_answers(base: str, document: dict, credentials: dict) -> None:
    """Every operation called for real; every answer fits the document."""
    a = Answers(base, document, credentials)
    command = "ANSWERS"
    task, one = "/v1/codeq/tasks", "/v1/codeq/tasks/{id}"
    unknown = "0190a8c4-0000-7000-8000-000000000000"
    claim = {"commands": [command], "leaseSeconds": 60}

    created = a.call("POST", task, 202, body={"command": command, "payload": {"n": 1}, "idempotencyKey": "k-1"})
    a.call("POST", task, 202, body={"command": command, "payload": {"n": 1}, "idempotencyKey": "k-1"})
    a.call("POST", task, 400, body={"command": command, "payload": None})
    a.call("POST", task, 400, raw=b"{not json")
    a.call("POST", task, 401, token=None, body={"command": command, "payload": {}})
    a.call("POST", task, 403, token="worker", body={"command": command, "payload": {}})
    a.call("POST", "/v1/codeq/tasks/batch", 200,
           body={"tasks": [{"command": command, "payload": [1]}, {"command": "bad name", "payload": {}}]},
           fits=False)
    a.call("GET", one, 200, id=created["id"])
    a.call("GET", one, 401, token=None, id=created["id"])
    a.call("GET", one, 404, id=unknown)

    # A delivery nacked, claimed again, failed with a result that is no object.
    claimed = a.call("POST", "/v1/codeq/tasks/claim", 200, token="worker", body=claim)
    a.call("POST", one + "/heartbeat", 200, token="worker", path=one + "/heartbeat", id=claimed["id"],
           body={"extendSeconds": 30, "attempt": claimed["attempts"]})
    a.call("POST", one + "/nack", 200, token="worker", id=claimed["id"], body={"delaySeconds": 0})
    a.call("POST", one + "/nack", 409, token="worker", id=claimed["id"], body={})
    again = a.call("POST", "/v1/codeq/tasks/claim/batch", 200, token="worker", body={**claim, "count": 5})
    first, second = again["tasks"][0], again["tasks"][1]
    a.call("POST", one + "/abandon", 200, token="worker", id=second["id"], body={"attempt": second["attempts"]})
    a.call("POST", one + "/result", 200, token="worker", id=first["id"],
           body={"status": "FAILED", "error": "bad input", "result": [1, 2, 3], "artifacts": None})
    a.call("POST", one + "/result", 400, token="worker", id=first["id"], body={"status": "DONE"})
    a.call("POST", one + "/result", 404, token="worker", id=unknown, body={"status": "FAILED", "error": "x"})
    a.call("GET", one + "/result", 200, id=first["id"])
    a.call("GET", one + "/result", 404, id=second["id"])

    # A result with an inline artifact, read back in its own media type.
    third = a.call("POST", "/v1/codeq/tasks/claim", 200, token="worker", body=claim)
    log = {"name": "log.txt", "contentBase64": base64.b64encode(b"hello").decode(), "contentType": "text/plain"}
    a.call("POST", one + "/result", 200, token="worker", id=third["id"],
           body={"status": "COMPLETED", "result": {}, "artifacts": [log], "claimNext": claim})
    artifact = one + "/artifacts/{name}"
    assert a.call("GET", artifact, 200, accept="*/*", id=third["id"], name="log.txt") == b"hello"
    a.call("GET", artifact, 404, accept="*/*", id=third["id"], name="other.txt")
    a.call("POST", "/v1/codeq/tasks/batch/results", 200, token="worker",
           body={"results": [{"taskId": third["id"], "status": "COMPLETED", "result": {}},
                             {"taskId": unknown, "status": "FAILED", "error": "x"}]})
    a.call("POST", "/v1/codeq/tasks/claim", 204, token="worker", body={**claim, "commands": ["EMPTY"]})
    a.call("POST", "/v1/codeq/tasks/claim/batch", 204, token="worker", body={"commands": ["EMPTY"], "count": 2})

    # A webhook with credentials and a secret query, as the worker that
    # claims its task sees it: the origin only.
    hooked = {"command": "HOOKED", "payload": {}, "webhook": "http://user:pw@127.0.0.1:9/hook?token=1"}
    a.call("POST", task, 202, body=hooked)
    shown = a.call("POST", "/v1/codeq/tasks/claim", 200, token="worker", body={**claim, "commands": ["HOOKED"]})
    assert shown["webhook"] == "http://127.0.0.1:9/…", shown["webhook"]

    # Cancels.
    later = a.call("POST", task, 202, body={"command": command, "payload": {}, "delaySeconds": 600})
    a.call("POST", one + "/cancel", 200, id=later["id"], body={"reason": "not needed"})
    a.call("POST", one + "/cancel", 409, id=later["id"], body={})
    a.call("POST", one + "/cancel", 404, id=unknown, body={})
    a.call("POST", "/v1/codeq/tasks/batch/cancel", 200, body={"ids": [later["id"], unknown]})

    # Subscriptions.
    subscriptions = "/v1/codeq/workers/subscriptions"
    subscribed = a.call("POST", subscriptions, 200, token="worker",
                        body={"callbackUrl": "http://127.0.0.1:9/ready", "eventTypes": [command]})
    subscription = subscriptions + "/{id}"
    a.call("POST", subscription + "/heartbeat", 200, token="worker", id=subscribed["subscriptionId"],
           body={"ttlSeconds": 60})
    a.call("DELETE", subscription, 204, token="worker", id=subscribed["subscriptionId"])
    a.call("DELETE", subscription, 404, token="worker", id=subscribed["subscriptionId"])

    # Administration.
    queue = "/v1/codeq/admin/queues/{command}"
    a.call("GET", "/v1/codeq/admin/queues", 200, token="admin")
    a.call("GET", "/v1/codeq/admin/queues", 403, token="worker")
    a.call("GET", queue, 200, token="admin", command=command)
    a.call("GET", queue, 400, token="admin", command="bad%20name")
    a.call("GET", queue + "/stats", 200, token="admin", command=command)
    a.call("PUT", queue + "/settings", 200, token="admin", command=command,
           body={"maxInFlight": 4, "ratePerSecond": 100.5, "burst": 2})
    a.call("PUT", queue + "/settings", 400, token="admin", command=command, body={"ratePerSecond": 0})
    a.call("GET", queue + "/settings", 200, token="admin", command=command)
    a.call("POST", queue + "/pause", 200, token="admin", command=command, raw=b"")
    a.call("POST", queue + "/resume", 200, token="admin", command=command, raw=b"")
    a.call("GET", queue + "/dlq", 200, token="admin", command=command)
    a.call("GET", queue + "/dlq", 400, token="admin", path=queue + "/dlq?limit=0", command=command)
    a.call("POST", queue + "/dlq/replay", 200, token="admin", command=command, body={})
    a.call("POST", queue + "/dlq/purge", 200, token="admin", command=command, body={"ids": [unknown]})
    a.call("GET", "/v1/codeq/admin/tasks", 200, token="admin", path="/v1/codeq/admin/tasks?includePayload=true")
    a.call("GET", "/v1/codeq/admin/tasks", 400, token="admin", path="/v1/codeq/admin/tasks?status=DONE")
    a.call("GET", "/v1/codeq/admin/tasks/{id}", 200, token="admin", id=third["id"])
    a.call("GET", "/v1/codeq/admin/tasks/{id}", 404, token="admin", id=unknown)
    a.call("GET", "/v1/codeq/admin/throughput", 200, token="admin")
    a.call("GET", "/v1/codeq/admin/workers", 200, token="admin")
    a.call("POST", "/v1/codeq/admin/tasks/cleanup", 200, token="admin", body={"limit": 10})
    a.call("POST", "/v1/codeq/admin/tasks/cleanup", 400, token="admin", body={"limit": 0})

    # Operations.
    a.call("GET", "/healthz", 200, token=None)
    a.call("GET", "/readyz", 200, token=None)
    a.call("GET", "/metrics", 200, token=None, accept="text/plain")
    a.call("GET", "/metrics", 200, token=None, accept="application/openmetrics-text; version=1.0.0")
    a.call("GET", "/openapi.json", 200, token=None)

    operations = {(m.upper(), p) for p, item in document["paths"].items() for m in item}
    missed = operations - {(m, p) for m, p, _ in a.checked}
    assert not missed, f"operations never called: {sorted(missed)}"
    print(f"answers: {len(a.checked)} (operation, status) pairs fit the document, every operation called")


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        server, credentials = start_server(sys.argv[1], work)
        try:
            base = credentials["baseUrl"]
            document = check_document(base, work)
            client_package = generate_client(document, work)
            run_flow(client_package, base, credentials)
            check_metrics(base)
            check_answers(base, json.loads(document.read_text()), credentials)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        if server.returncode != 0:
            sys.exit(f"codeq serve exited with {server.returncode}: {(work / 'serve.log').read_text()}")
    print("openapi_check: all checks passed")


if __name__ == "__main__":
    main()
