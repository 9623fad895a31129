#!/usr/bin/env python3
"""Seeds a running Krafter for the schema fuzzer and writes its config.

Usage: seed.py BASE_URL ADMIN_KEY OUT_TOML

Creates real resources so every path parameter the fuzzer fills in names
something that exists (otherwise every call would only test the 404 path):

- source A (provider `none`) with destination A1, one ingested event and
  its delivery: read, list, update, replay and retry operations use these;
- source B: the target of PATCH on a source (so a fuzzed `enabled: false`
  does not switch off ingest into A);
- victims that DELETE operations remove (source C, destination A2, an API
  key), so no delete takes away what the other operations need, and the
  admin key itself is never revoked.

Destinations point at `*.invalid` hosts: they never resolve, and the whole
run happens in a network namespace that has only loopback anyway.
"""

import json
import sys
import urllib.request

BASE, KEY, OUT = sys.argv[1], sys.argv[2], sys.argv[3]


def call(method, path, body=None, auth=True):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    if auth:
        req.add_header("Authorization", f"Bearer {KEY}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        text = resp.read()
        return json.loads(text) if text else None


def source(name):
    return call("POST", "/api/v1/webhooks/sources", {"name": name, "provider": "none"})["data"]


def destination(src, host):
    path = f"/api/v1/webhooks/sources/{src}/destinations"
    return call("POST", path, {"url": f"https://{host}.invalid/hook"})["data"]["id"]


a, b, c = source("fuzz A"), source("fuzz B"), source("fuzz C (deleted)")
a1 = destination(a["id"], "a1")
a2 = destination(a["id"], "a2")
destination(b["id"], "b1")
event = call("POST", f"/in/{a['slug']}", {"type": "fuzz.seed", "id": "seed-1"}, auth=False)["data"]["event_id"]
deliveries = call("GET", f"/api/v1/webhooks/sources/{a['id']}/events/{event}/deliveries")["data"]
delivery = next(d["id"] for d in deliveries if d["destination_id"] == a1)
victim_key = call("POST", "/api/v1/api-keys", {"name": "fuzz victim", "scopes": ["webhooks:read"]})["data"]["id"]

SRC = "/api/v1/webhooks/sources"
DST = SRC + "/{source_id}/destinations"
EVT = SRC + "/{id}/events/{event_id}"
# Path parameters per operation ("METHOD path" as schemathesis names them).
params = {
    "DELETE /api/v1/api-keys/{id}": {"path.id": victim_key},
    f"GET {SRC}/{{id}}": {"path.id": a["id"]},
    f"PATCH {SRC}/{{id}}": {"path.id": b["id"]},
    f"DELETE {SRC}/{{id}}": {"path.id": c["id"]},
    f"POST {DST}": {"path.source_id": a["id"]},
    f"GET {DST}": {"path.source_id": a["id"]},
    f"GET {DST}/{{id}}": {"path.source_id": a["id"], "path.id": a1},
    f"PATCH {DST}/{{id}}": {"path.source_id": a["id"], "path.id": a1},
    f"DELETE {DST}/{{id}}": {"path.source_id": a["id"], "path.id": a2},
    f"POST {DST}/{{id}}/rotate-secret": {"path.source_id": a["id"], "path.id": a1},
    f"GET {SRC}/{{id}}/events": {"path.id": a["id"]},
    f"GET {EVT}": {"path.id": a["id"], "path.event_id": event},
    f"GET {EVT}/deliveries": {"path.id": a["id"], "path.event_id": event},
    f"POST {EVT}/replay": {"path.id": a["id"], "path.event_id": event},
    f"POST {EVT}/deliveries/{{delivery_id}}/retry": {
        "path.id": a["id"],
        "path.event_id": event,
        "path.delivery_id": delivery,
    },
    f"POST {SRC}/{{id}}/replay": {"path.id": a["id"]},
    "POST /in/{slug}": {"path.slug": a["slug"]},
}

# Where a schema-valid body can still be refused with 422 because validity
# depends on stored state or the network, which no JSON Schema can say:
STATE_DEPENDENT = {
    # A URL whose host is (or resolves to) a private address is refused
    # (SSRF guard, SPEC section 6); the schema can only say "http(s) URI".
    f"POST {DST}": "the destination URL's host may be private",
    f"PATCH {DST}/{{id}}": "the destination URL's host may be private",
    # Which signing_secret / provider_config a source takes depends on the
    # provider it was created with, which a PATCH body does not carry.
    f"PATCH {SRC}/{{id}}": "checks depend on the stored source's provider",
    # destination_ids must name existing, enabled destinations of the source.
    f"POST {EVT}/replay": "destination_ids must exist in the source",
    f"POST {SRC}/{{id}}/replay": "destination_ids must exist in the source",
}
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429"]

with open(OUT, "a") as out:
    for name, values in params.items():
        out.write(f"\n[[operations]]\ninclude-name = {json.dumps(name)}\n")
        out.write("[operations.parameters]\n")
        for key, value in values.items():
            out.write(f"{json.dumps(key)} = {json.dumps(value)}\n")
        if name in STATE_DEPENDENT:
            out.write(f"# 422 allowed for valid data: {STATE_DEPENDENT[name]}\n")
            out.write("[operations.checks.positive_data_acceptance]\n")
            out.write(f"expected-statuses = {json.dumps(ACCEPTED + ['422'])}\n")
print(f"seeded source {a['id']}, event {event}, delivery {delivery}")
