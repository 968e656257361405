"""ASGI plumbing every front end shares (http.py, websocket.py, observed.py): reading a request
header, answering with a whole body or an error envelope, refusing a WebSocket upgrade, and
finding the client's connection to close it."""

from __future__ import annotations

from typing import Iterable

import trio

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
    ``send``, which would cost every frame a call and hide hypercorn's connection (client_closer)."""
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


def client_closer(send):
    """A function that closes this client's connection, from any task, even mid-write; None if
    the server is not one whose connection can be found.

    hypercorn writes to the socket inside a shielded cancel scope (TCPServer.protocol_send), so
    cancelling a task blocked on a client that stopped reading does not end the write: the task,
    the connection and its upstream connection would be held forever. Closing the socket does end
    it (trio wakes a task blocked on a socket closed under it, and hypercorn takes that as the
    client leaving). The ASGI ``send`` is a bound method of hypercorn's stream object, whose
    ``send`` is the protocol's, whose ``send`` is the TCPServer's, which holds the trio stream."""
    fn = send
    for _ in range(6):
        owner = getattr(fn, "__self__", None)
        if owner is None:
            return None
        stream = getattr(owner, "stream", None)
        if isinstance(stream, trio.SSLStream):
            stream = stream.transport_stream
        if isinstance(stream, trio.SocketStream):
            return stream.socket.close
        fn = getattr(owner, "send", None)
    return None
