#!/usr/bin/env python3
"""What the Redis backend's hot scripts cost Redis, per task.

Loads `create`, `claim` and `complete` the way the server builds them
(the shared library's parts each script names, then its body: see
crates/codeq-server/src/store/redis/scripts.rs) into a running
redis-server, then runs ROUNDS cycles of K tasks: one create call of K
tasks, one claim call of K claims (one per worker), one complete call
of K results, as the server's merged calls send them. Prints Redis's
own time per task for each script (INFO commandstats, EVALSHA), and the
time the commands inside them took. The database is flushed first.

With --claim-next, each round's results go with the claims of the
workers' next tasks in one `complete_claim` call (a result with
`claimNext`), as the server merges them, instead of a complete call and
a claim call.

    redis-server --port 6399 --save '' --appendonly yes --appendfsync everysec &
    python3 tools/redis_script_cost.py --port 6399 --items 8 --rounds 500

Only the Python standard library; the scripts are read from the
checkout (LUA_DIR to point elsewhere, e.g. at another version's lua/).
"""
import argparse
import json
import os
import re
import socket
import time
import uuid

LUA_DIR = os.environ.get(
    "LUA_DIR",
    os.path.join(os.path.dirname(__file__), "..", "crates/codeq-server/src/store/redis/lua"),
)


class Redis:
    """Just enough of RESP2 for this tool."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(out))
        return self.read()

    def read(self):
        line = self.file.readline()[:-2]
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.file.read(size + 2)[:-2]
            return data.decode()
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self.read() for _ in range(size)]
        raise RuntimeError(f"unexpected reply {line!r}")

    def evalsha_stats(self):
        """(calls, µs) of EVALSHA and µs of every other command."""
        calls, usec, inner = 0, 0, 0
        for line in self.call("INFO", "commandstats").splitlines():
            match = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=(\d+)", line)
            if not match:
                continue
            name, n, us = match.group(1), int(match.group(2)), int(match.group(3))
            if name == "evalsha":
                calls, usec = n, us
            elif name not in ("info", "config|resetstat", "flushall", "script|load"):
                inner += us
        return calls, usec, inner


def declared(part):
    first = part.split("\n", 1)[0][len("local "):]
    names = first[len("function "):].split("(")[0] if first.startswith("function ") else first.split("=")[0]
    return [name.strip() for name in names.split(",") if name.strip()]


def names(text, name):
    return re.search(r"(?<![A-Za-z0-9_])" + re.escape(name) + r"(?![A-Za-z0-9_])", text) is not None


def without_comments(text):
    return "\n".join(line.split("--", 1)[0] for line in text.split("\n"))


def library_for(lib, body):
    """The library as `body` needs it (scripts.rs, library_for)."""
    head, rest = lib.split("-- @parts\n", 1)
    starts = sorted([m.start() + 1 for m in re.finditer("\nlocal ", rest)] + ([0] if rest.startswith("local ") else []))
    starts.append(len(rest))
    parts = [(rest[a:b], declared(rest[a:b])) for a, b in zip(starts, starts[1:])]
    codes = [without_comments(text) for text, _ in parts]
    body = without_comments(body)
    kept = [False] * len(parts)
    changed = True
    while changed:
        changed = False
        for index, (_, declared_names) in enumerate(parts):
            if kept[index]:
                continue
            named_by = lambda text: any(names(text, name) for name in declared_names)  # noqa: E731
            if named_by(body) or any(keep and named_by(code) for code, keep in zip(codes, kept)):
                kept[index] = True
                changed = True
    return head + "".join(text for (text, _), keep in zip(parts, kept) if keep)


def script(name):
    with open(os.path.join(LUA_DIR, "lib.lua")) as lib, open(os.path.join(LUA_DIR, f"{name}.lua")) as body:
        text = body.read()
        return library_for(lib.read(), text) + "\n" + text


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=6399)
    parser.add_argument("--items", type=int, default=8, help="tasks per script call (K)")
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--claim-next", action="store_true", help="results claim the next task in the same call")
    args = parser.parse_args()
    redis = Redis(args.port)
    redis.call("FLUSHALL")
    names = ("create", "claim", "complete_claim") if args.claim_next else ("create", "claim", "complete")
    sha = {name: redis.call("SCRIPT", "LOAD", script(name)) for name in names}
    payload = json.dumps({"i": 1, "t": 123.456})
    spent = {name: [0, 0] for name in names}

    def run(name, script_args):
        _, before, inner_before = redis.evalsha_stats()
        reply = redis.call("EVALSHA", sha[name], 0, *script_args)
        _, after, inner_after = redis.evalsha_stats()
        spent[name][0] += after - before
        spent[name][1] += inner_after - inner_before
        return reply

    def claim_args(worker, now):
        return [f"worker-{worker}", now + 300_000, now, 1, 1, "bench"]

    def result_args(task, worker):
        return [task, f"worker-{worker}", "=1", "COMPLETED", '={"ok":true}', "", "", ""]

    held = []
    for _ in range(args.rounds):
        now = int(time.time() * 1000)
        common = ["codeq", now, "server", "cost-tool"]
        created = common[:]
        for _ in range(args.items):
            created += [uuid.uuid4(), "bench", payload, 0, "", 5, "", "", now, "producer", now]
        run("create", created)
        if args.claim_next and held:
            finished = common[:]
            for worker, task in enumerate(held):
                finished += result_args(task, worker) + claim_args(worker, now)
            claimed = json.loads(run("complete_claim", finished)[0])["claims"]
            held = [task for claim in claimed for task in claim["ids"] or []]
            if len(held) != args.items:
                raise SystemExit(f"claimed {len(held)} of {args.items} tasks")
            continue
        claims = common[:]
        for worker in range(args.items):
            claims += claim_args(worker, now)
        claimed = json.loads(run("claim", claims)[0])["claims"]
        held = [task for claim in claimed for task in claim["ids"] or []]
        if len(held) != args.items:
            raise SystemExit(f"claimed {len(held)} of {args.items} tasks")
        if args.claim_next:
            continue
        results = common[:]
        for worker, task in enumerate(held):
            results += result_args(task, worker)
        run("complete", results)
    tasks = args.rounds * args.items
    total = 0.0
    for name, (usec, inner) in spent.items():
        total += usec / tasks
        print(f"{name:9s} {usec / tasks:6.2f} µs a task (commands inside: {inner / tasks:5.2f})")
    print(f"cycle     {total:6.2f} µs ({args.items} tasks a call)")


if __name__ == "__main__":
    main()
