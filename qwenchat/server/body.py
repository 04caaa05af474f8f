"""A request's JSON body, read within a size limit: 413 as soon as it is exceeded (by the
Content-Length header or while reading a chunked body), 400 when it is not a JSON object."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import ClientDisconnect, Request

from qwenchat.server.errors import APIError

DEFAULT_MAX_BODY = 8 << 20  # bytes; a full 32k-token context is well under 1 MiB of text


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(int(declared), limit)
    data = bytearray()
    try:
        async for piece in request.stream():
            data += piece
            if len(data) > limit:
                raise too_large(len(data), limit)
    except ClientDisconnect:  # nobody will read the answer; the access log shows it
        raise APIError(400, "the client disconnected while sending the request", code="client_disconnected") from None
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
    except RecursionError:
        raise APIError(400, "the request body nests too deeply", code="invalid_json") from None
    if not isinstance(obj, dict):
        raise APIError(400, f"the request body must be a JSON object, not {type(obj).__name__}", code="invalid_json")
    return obj


def too_large(size: int, limit: int) -> APIError:
    return APIError(413, f"the request body has {size} bytes or more; this server takes at most {limit}",
                    code="request_too_large")
