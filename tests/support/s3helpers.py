"""Helpers for the s3:// tests: unique resource names, and AWS errors answered in place of the service."""

from __future__ import annotations

import uuid


def unique_name(kind: str) -> str:
    """A bucket or table name no other test uses."""
    return f"chunkstore-test-{kind}-{uuid.uuid4().hex[:12]}"


class _Body:
    def __init__(self, data: bytes):
        self._data = data

    def stream(self, **_):
        yield self._data


def answer_with_error(client, operation: str, status: int, code: str, *, times: int | None = None) -> list[int]:
    """Make client's requests for operation fail with this AWS error, the first `times` attempts
    (all with None), as the service would answer; return a list that grows by one per answer.

    The answer goes through botocore's own parsing and retry handling: only the network
    round trip is left out."""
    from botocore.awsrequest import AWSResponse

    answered: list[int] = []
    service = client.meta.service_model.service_name
    if client.meta.service_model.protocol == "json":
        body = f'{{"__type": "com.amazonaws.dynamodb.v20120810#{code}", "message": "injected {code}"}}'.encode()
        headers = {"Content-Type": "application/x-amz-json-1.0"}
    else:
        body = f"<Error><Code>{code}</Code><Message>injected {code}</Message></Error>".encode()
        headers = {"Content-Type": "application/xml"}

    def answer(request, **_):
        if times is not None and len(answered) >= times:
            return None
        answered.append(status)
        return AWSResponse(request.url, status, headers, _Body(body))

    client.meta.events.register(f"before-send.{service}.{operation}", answer)
    return answered
