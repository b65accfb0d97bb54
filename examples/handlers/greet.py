#!/usr/bin/env python3
"""A codeq worker handler in Python (standard library only):

    codeq worker start --events GREET --handler examples/handlers/greet.py

The task JSON arrives on stdin; its "payload" field is itself a JSON string.
Print one result object on stdout:
    {"status": "COMPLETED", "result": {...}}  or  {"status": "FAILED", "error": "..."}
An exception (non-zero exit) has the task retried later, with the end of
stderr (the traceback) as the reason.
"""
import json
import sys


def handle(task):
    payload = json.loads(task["payload"])
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        return {"status": "FAILED", "error": "payload has no name"}
    return {"status": "COMPLETED", "result": {"greeting": f"Hello, {name}!"}}


if __name__ == "__main__":
    task = json.load(sys.stdin)
    print(f"greeting for task {task['id']} attempt {task['attempts']}", file=sys.stderr)
    print(json.dumps(handle(task)))
