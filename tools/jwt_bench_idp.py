#!/usr/bin/env python3
"""A throwaway identity provider, to benchmark codeQ with JWTs.

Generates an RSA key (openssl CLI), serves its JWKS on
http://127.0.0.1:PORT/jwks.json, and writes into OUT:
  config.yaml     producer and worker issuers pointing at that JWKS
  producer.token  RS256 producer JWT (1 hour)
  worker.token    RS256 worker JWT (1 hour, eventTypes ["*"], every worker scope)
Then serves until interrupted. Python standard library and openssl only.

    tools/jwt_bench_idp.py --out /tmp/jwt-bench &
    codeq serve --config /tmp/jwt-bench/config.yaml
    codeq bench --producer-token "$(cat /tmp/jwt-bench/producer.token)" \
                --worker-token "$(cat /tmp/jwt-bench/worker.token)"
"""

import argparse
import base64
import http.server
import json
import os
import subprocess
import time

PRODUCER_ISS = "https://id.bench.invalid"
WORKER_ISS = "https://workers.bench.invalid"
KID = "bench-1"
WORKER_SCOPES = "codeq:claim codeq:heartbeat codeq:abandon codeq:nack codeq:result codeq:subscribe"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def openssl(*args: str, data: bytes = b"") -> bytes:
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=True).stdout


def public_jwk(key_path: str) -> dict:
    modulus = openssl("rsa", "-in", key_path, "-noout", "-modulus").decode().strip()
    n = bytes.fromhex(modulus.split("=", 1)[1])
    return {"kty": "RSA", "kid": KID, "alg": "RS256", "use": "sig", "n": b64(n), "e": b64(b"\x01\x00\x01")}


def sign(key_path: str, claims: dict) -> str:
    header = b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": KID}).encode())
    payload = b64(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}"
    signature = openssl("dgst", "-sha256", "-sign", key_path, data=signing_input.encode())
    return f"{signing_input}.{b64(signature)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--out", default="jwt-bench")
    args = parser.parse_args()

    os.makedirs(args.out, exist_ok=True)
    key_path = os.path.join(args.out, "key.pem")
    openssl("genrsa", "-out", key_path, "2048")
    jwks = json.dumps({"keys": [public_jwk(key_path)]}).encode()

    now = int(time.time())
    common = {"iat": now, "exp": now + 3600}
    tokens = {
        "producer.token": sign(key_path, {"iss": PRODUCER_ISS, "aud": "codeq", "sub": "bench-producer", **common}),
        "worker.token": sign(
            key_path,
            {"iss": WORKER_ISS, "aud": "codeq-worker", "sub": "bench-worker",
             "eventTypes": ["*"], "scope": WORKER_SCOPES, **common},
        ),
    }
    for name, token in tokens.items():
        with open(os.path.join(args.out, name), "w") as f:
            f.write(token)
    url = f"http://127.0.0.1:{args.port}/jwks.json"
    with open(os.path.join(args.out, "config.yaml"), "w") as f:
        f.write(
            f"identityJwksUrl: {url}\nidentityIssuer: {PRODUCER_ISS}\nidentityAudience: codeq\n"
            f"workerJwksUrl: {url}\nworkerIssuer: {WORKER_ISS}\n"
        )

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(jwks)))
            self.end_headers()
            self.wfile.write(jwks)

        def log_message(self, *_args) -> None:
            pass

    print(f"JWKS on {url}; tokens and config.yaml in {args.out}", flush=True)
    http.server.HTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
