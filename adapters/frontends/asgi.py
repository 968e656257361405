"""ASGI plumbing every front end shares (http.py, websocket.py, observed.py): reading a request
header, answering with a whole body or an error envelope, refusing a WebSocket upgrade. (The
client's connection itself: connection.py.)"""

from __future__ import annotations

from typing import Iterable

from respline.engine.errors import ApiError

JSON = b"application/json"


def header(scope: dict, name: bytes) -> str | None:
    for k, v in scope.get("headers") or ():
        if k == name:
            return v.decode("latin-1")
    return None


async def send_body(send, status: int, body: bytes, content_type: bytes, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """A whole answer: its head (content type and length first) and its one body message."""
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(send, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
    await send_body(send, status, body, JSON, [(k.encode(), v.encode()) for k, v in (extra or {}).items()])


async def send_error(send, err: ApiError) -> None:
    await send_json(send, err.status, err.body(), err.headers)


def id_headers(scope: dict) -> list[tuple[bytes, bytes]]:
    """An upgrade's answer carries the connection's request id, as every HTTP answer does
    (made sane by adapters/frontends/observed.py); sent with the answer, not by wrapping
    ``send``, which would cost every frame a call and hide hypercorn's connection (connection.py)."""
    rid = scope.get("respline.request_id")
    return [(b"x-request-id", rid.encode())] if rid else []


async def deny_upgrade(scope: dict, send, err: ApiError) -> None:
    """Refuse a WebSocket upgrade with the HTTP status and an error envelope (ASGI denial
    extension), or a bare close where the server has no such extension."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        body = err.body()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": err.status,
                "headers": [
                    (b"content-type", JSON),
                    (b"content-length", str(len(body)).encode()),
                    *id_headers(scope),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})
