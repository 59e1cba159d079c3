"""A FHIR R4 server *test double* that receives transaction Bundles (e2e export::fhir_*).

No real FHIR server installs quickly from the registries this project uses (HAPI and
Medplum need a JVM or PostgreSQL+Redis and are not packaged there; the PyPI/npm "servers"
found either lack transactions or are frameworks). So this stands in for one, and is
strict where a real server is: every incoming Bundle and every entry's resource is
validated with fhir.resources' R4B models, a transaction must be all PUT `Type/id` matching
its resource, and every `Type/id` reference must resolve inside the Bundle or the store
(a transaction is atomic: one bad entry rejects the whole Bundle with an
OperationOutcome). Accepted Bundles are answered with a proper `transaction-response`
(201 Created the first time, 200 OK on update, versionId counting up).

    fhir_receiver.py --port 0 [--base /fhir] [--fail-first N] [--token 'Bearer x']

prints `listening PORT` once ready and serves under `--base`. `--fail-first N` answers
the first N POSTs with 503 and an OperationOutcome (to exercise the sender's retries).
`GET <base>/_received` returns what was received: counts and the stored resources with
their versions. `GET <base>/Type/id` reads one resource.
"""

import argparse
import json
import re
import sys
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fhir.resources.R4B import get_fhir_model_class

LOCK = threading.Lock()
STATE = {"posts": 0, "failed_on_purpose": 0, "rejected": 0, "accepted": 0, "rejections": []}
STORE = {}  # "Type/id" -> {"version": n, "resource": {...}}
REF = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$")


def outcome(code, text):
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }


def references(value):
    """Every `reference` string anywhere in a resource."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "reference" and isinstance(v, str):
                yield v
            else:
                yield from references(v)
    elif isinstance(value, list):
        for v in value:
            yield from references(v)


def check_transaction(bundle):
    """The entries as (key, resource), or raises ValueError naming the problem."""
    get_fhir_model_class("Bundle").model_validate(bundle)
    if bundle.get("type") != "transaction":
        raise ValueError(f"Bundle.type is {bundle.get('type')!r}, not 'transaction'")
    entries = []
    for i, e in enumerate(bundle.get("entry") or []):
        res = e.get("resource") or {}
        rtype = res.get("resourceType")
        try:
            get_fhir_model_class(rtype).model_validate(res)
        except Exception as exc:  # pydantic ValidationError, KeyError for unknown types
            raise ValueError(f"entry {i} ({rtype}): {exc}") from exc
        req = e.get("request") or {}
        key = f"{rtype}/{res.get('id')}"
        if req.get("method") != "PUT" or req.get("url") != key:
            raise ValueError(f"entry {i}: request {req} is not PUT {key}")
        entries.append((key, res))
    if not entries:
        raise ValueError("the transaction has no entries")
    keys = {k for k, _ in entries}
    for key, res in entries:
        for ref in references(res):
            if not REF.match(ref):
                raise ValueError(f"{key}: reference {ref!r} is not Type/id")
            if ref not in keys and ref not in STORE:
                raise ValueError(f"{key}: reference {ref} does not resolve")
    return entries


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):  # quiet unless asked
        if ARGS.verbose:
            super().log_message(fmt, *args)

    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def local_path(self):
        """The request path below --base, or None outside it."""
        base = ARGS.base.rstrip("/")
        if self.path != base and not self.path.startswith(base + "/"):
            return None
        return self.path[len(base):].strip("/")

    def do_GET(self):
        with LOCK:
            path = self.local_path()
            if path == "_received":
                return self.send_json(200, {**STATE, "resources": STORE})
            key = path or ""
            if key in STORE:
                return self.send_json(200, STORE[key]["resource"])
        self.send_json(404, outcome("not-found", f"{self.path} not found"))

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        with LOCK:
            STATE["posts"] += 1
            if STATE["posts"] <= ARGS.fail_first:
                STATE["failed_on_purpose"] += 1
                return self.send_json(503, outcome("transient", "down for the test"))
            if ARGS.token and self.headers.get("Authorization") != ARGS.token:
                STATE["rejected"] += 1
                return self.send_json(401, outcome("login", "bad or missing Authorization"))
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if self.local_path() != "" or ctype != "application/fhir+json":
                STATE["rejected"] += 1
                STATE["rejections"].append(f"POST {self.path} as {ctype!r}")
                return self.send_json(400, outcome("not-supported", "POST a Bundle to the base"))
            try:
                entries = check_transaction(json.loads(raw))
            except Exception as exc:
                STATE["rejected"] += 1
                STATE["rejections"].append(str(exc)[:500])
                return self.send_json(400, outcome("invalid", str(exc)[:500]))
            now = datetime.now(timezone.utc).isoformat()
            response = []
            for key, res in entries:
                old = STORE.get(key)
                version = old["version"] + 1 if old else 1
                STORE[key] = {"version": version, "resource": res}
                response.append({"response": {
                    "status": "200 OK" if old else "201 Created",
                    "location": f"{key}/_history/{version}",
                    "etag": f'W/"{version}"',
                    "lastModified": now,
                }})
            STATE["accepted"] += 1
            self.send_json(200, {
                "resourceType": "Bundle",
                "type": "transaction-response",
                "entry": response,
            })


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--base", default="/", help="the base path, e.g. /fhir")
    p.add_argument("--fail-first", type=int, default=0)
    p.add_argument("--token", default=None, help="the Authorization header value required")
    p.add_argument("--verbose", action="store_true")
    ARGS = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    print(f"listening {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
