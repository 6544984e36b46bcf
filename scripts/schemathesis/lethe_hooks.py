"""NDJSON for schemathesis: POST /v1/requests:bulk takes and answers one JSON document per
line. Its OpenAPI document describes both bodies as arrays whose items are the lines."""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def to_ndjson(ctx, value):
    if value is None:
        return None
    if isinstance(value, (bytes, str)):
        return value if isinstance(value, bytes) else value.encode("utf-8")
    items = value if isinstance(value, list) else [value]
    return "".join(json.dumps(item) + "\n" for item in items).encode("utf-8")


@schemathesis.deserializer("application/x-ndjson")
def from_ndjson(ctx, response):
    return [json.loads(line) for line in response.content.splitlines() if line.strip()]
