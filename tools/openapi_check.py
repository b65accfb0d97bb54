#!/usr/bin/env python3
"""The OpenAPI document and the metrics, checked by other people's tools.

Starts the real `codeq serve` (local mode, port 0, a temporary data
directory), then:

1. validates `/openapi.json` as OpenAPI 3.1 with openapi-spec-validator;
2. generates a Python client from it with openapi-python-client and, with
   that client alone, creates a task, claims it, submits its result and
   reads it back (the generated models parse every answer);
3. parses `/metrics` in the OpenMetrics format with the Prometheus
   project's own Python parser and checks the task's counters.

Needs the packages of tools/requirements-ci.txt. `.ci/run` installs them
in a virtual environment and runs this after the Rust tests.

Usage: openapi_check.py PATH/TO/codeq
"""

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

    result = models.SubmitResultResultType0.from_dict({"url": "s3://bucket/j-1.wav"})
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
    assert read.result.result.to_dict() == {"url": "s3://bucket/j-1.wav"}

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
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        if server.returncode != 0:
            sys.exit(f"codeq serve exited with {server.returncode}: {(work / 'serve.log').read_text()}")
    print("openapi_check: all checks passed")


if __name__ == "__main__":
    main()
