"""One turn, front end independent: parse, route, translate, call the upstream, stream back.

The HTTP and WebSocket front ends both go through here. ``prepare`` does everything that can
fail with an error envelope before a byte is sent; ``open_upstream`` adds the upstream's own
refusals (status, connect errors, timeouts) to that; ``pump`` streams the rest, where a failure can
only be an ``error`` event and ``response.failed``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx
import msgspec
import trio

from adapters.config import Config, Route, Router, Timeouts
from adapters.providers.openai_chat import ChatProvider, error_from_upstream
from engine.deltas import UpstreamError
from engine.errors import ApiError
from engine.ids import Clock, Ids
from engine.pipeline import ResponsePipeline, chat_pipeline
from engine.seal import Sealer
from engine.store import Store, StoredResponse, expand_chain
from engine.translate import (
    decode_item,
    input_items,
    item_to_dict,
    parse_create,
    response_template,
    to_chat_request,
)
from engine.wire import request as Q
from engine.wire.responses import Response

log = logging.getLogger("respline.gateway")

_ERROR_BODY_LIMIT = 64 * 1024


class Turn:
    """Everything one request needs once it has been validated."""

    __slots__ = (
        "req",
        "tenant",
        "items",
        "provider",
        "route",
        "chat_body",
        "http_request",
        "payload",
        "pipeline",
        "store",
        "record_dir",
    )

    def __init__(self) -> None:
        self.record_dir: Path | None = None


class Gateway:
    def __init__(
        self,
        cfg: Config,
        providers: dict[str, ChatProvider],
        router: Router,
        store: Store,
        sealer: Sealer,
        ids: Ids | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.cfg = cfg
        self.providers = providers
        self.router = router
        self.store = store
        self.sealer = sealer
        self.ids = ids or Ids()
        self.clock = clock or Clock()
        self.dialect = cfg.server.reasoning_dialect
        self.record_dir = Path(cfg.server.record_dir) if cfg.server.record_dir else None

    def model_list(self) -> list[tuple[str, str]]:
        """Routable model names (exact routes and globs as declared) with their provider."""
        out = []
        for r in self.cfg.routes:
            out.append((r.model, r.provider))
        return out

    # -- before any byte -----------------------------------------------------------------

    async def prepare(self, body: bytes, tenant: str, *, encoding: str | None = "sse") -> Turn:
        req = parse_create(body)
        return await self.prepare_request(req, tenant, encoding=encoding)

    async def prepare_request(
        self,
        req: Q.CreateRequest,
        tenant: str,
        *,
        encoding: str | None = "sse",
        extra_context: list[dict[str, Any]] | None = None,
    ) -> Turn:
        route = self.router.resolve(req.model or "")
        if route is None:
            raise ApiError(
                404,
                f"The model '{req.model}' does not exist or is not routed by this gateway.",
                param="model",
                code="model_not_found",
            )
        provider = self.providers[route.provider]
        items = input_items(req)
        context: list[Any] = []
        if extra_context is not None:
            context = [decode_item(it, "previous_response") for it in extra_context]
        elif req.previous_response_id:
            chain = await expand_chain(self.store, tenant, req.previous_response_id)
            if chain is None:
                raise ApiError(
                    404,
                    f"Previous response with id '{req.previous_response_id}' not found.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            context = [decode_item(_as_input(it), "previous_response") for it in chain]
        if not items and not context:
            raise ApiError(400, "Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
        chat_body, tools = to_chat_request(
            req, context + items, route.upstream_model, provider.dialect, self.sealer.open
        )
        include = req.include or []
        seal = self.sealer.seal_reasoning if "reasoning.encrypted_content" in include else None
        template = response_template(req, self.ids, self.clock)
        turn = Turn()
        turn.req = req
        turn.tenant = tenant
        turn.items = items
        turn.provider = provider
        turn.route = route
        turn.chat_body = chat_body
        turn.http_request, turn.payload = provider.build(chat_body)
        turn.pipeline = chat_pipeline(
            template,
            self.ids,
            self.clock,
            encoding=encoding,
            reasoning_dialect=self.dialect,
            tools=tools,
            seal_reasoning=seal,
            think_tags=provider.dialect.think_tags,
        )
        turn.store = req.store is not False
        return turn

    async def open_upstream(self, turn: Turn) -> httpx.Response:
        """Send the upstream request and wait for its status line; refusals become ApiErrors."""
        t: Timeouts = turn.provider.timeouts
        try:
            with trio.fail_after(t.connect + t.first_byte):
                resp = await turn.provider.client.send(turn.http_request, stream=True)
        except trio.TooSlowError:
            raise ApiError(504, "The upstream did not answer in time.", code="upstream_timeout", type="server_error") from None
        except httpx.TimeoutException:
            raise ApiError(504, "Timed out connecting to the upstream.", code="upstream_timeout", type="server_error") from None
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.NetworkError) as exc:
            raise ApiError(502, f"The upstream is unreachable: {exc.__class__.__name__}.", code="upstream_unreachable", type="server_error") from None
        except httpx.HTTPError as exc:
            raise ApiError(502, f"Upstream request failed: {exc.__class__.__name__}.", code="upstream_error", type="server_error") from None
        if resp.status_code >= 400:
            try:
                with trio.move_on_after(t.idle):
                    body = b""
                    async for piece in resp.aiter_raw():
                        body += piece
                        if len(body) > _ERROR_BODY_LIMIT:
                            break
            except httpx.HTTPError:
                body = b""
            finally:
                await resp.aclose()
            raise error_from_upstream(resp.status_code, body, resp.headers)
        if self.record_dir is not None:
            turn.record_dir = self._record_start(turn)
        return resp

    # -- streaming -----------------------------------------------------------------------

    async def pump(self, turn: Turn, resp: httpx.Response, emit: Callable[[list], Awaitable[None]]) -> None:
        """Upstream body -> pipeline -> ``emit(frames)``; always ends with a terminal event.

        Timeouts are cancel scopes: first byte and idle between reads per read, total over all.
        The stored response is written before the frames that carry the terminal event go out.
        """
        pipe: ResponsePipeline = turn.pipeline
        t: Timeouts = turn.provider.timeouts
        await emit(pipe.start())
        recorder = _Recorder(turn.record_dir)
        failure: UpstreamError | None = None
        out: list = []
        try:
            with trio.move_on_after(t.total) as total_scope:
                chunks = resp.aiter_raw()
                wait = t.first_byte
                while True:
                    with trio.move_on_after(wait) as read_scope:
                        try:
                            chunk = await chunks.__anext__()
                        except StopAsyncIteration:
                            break
                    if read_scope.cancelled_caught:
                        failure = UpstreamError(
                            message=f"The upstream sent nothing for {wait:g} seconds.",
                            type="server_error",
                            code="upstream_timeout",
                        )
                        break
                    wait = t.idle
                    recorder.write(chunk)
                    frames = pipe.feed(chunk)
                    if frames:
                        if pipe.builder.finished:  # an in-band upstream error ended it
                            out = frames
                            break
                        await emit(frames)
            if total_scope.cancelled_caught:
                failure = UpstreamError(
                    message=f"The request exceeded the total timeout of {t.total:g} seconds.",
                    type="server_error",
                    code="upstream_timeout",
                )
        except httpx.HTTPError as exc:
            failure = UpstreamError(
                message=f"The upstream connection failed mid-stream: {exc.__class__.__name__}.",
                type="server_error",
                code="upstream_error",
            )
        finally:
            recorder.close()
            with trio.CancelScope(shield=True):
                await resp.aclose()
        out += pipe.fail(failure) if failure is not None else pipe.close()
        await self.save(turn)
        await emit(out)

    async def collect(self, turn: Turn, resp: httpx.Response) -> Response:
        """Non-streaming: the same pipeline, returning the final Response object."""
        events: list = []

        async def sink(evs: list) -> None:
            events.extend(e for e in evs if hasattr(e, "response"))

        await self.pump(turn, resp, sink)
        return turn.pipeline.response

    async def save(self, turn: Turn) -> None:
        if not turn.store:
            return
        resp = turn.pipeline.response
        stored = StoredResponse(
            tenant=turn.tenant,
            id=resp.id,
            response=msgspec.to_builtins(resp),
            input_items=[item_to_dict(i) for i in turn.items],
            previous_response_id=turn.req.previous_response_id,
            created_at=resp.created_at,
        )
        await self.store.put_response(stored)

    # -- recording -----------------------------------------------------------------------

    def _record_start(self, turn: Turn) -> Path:
        assert self.record_dir is not None
        d = self.record_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{turn.pipeline.response.id}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "request.json").write_bytes(msgspec.json.format(turn.payload, indent=2))
        return d


class _Recorder:
    """Tees raw upstream bytes into ``upstream.sse`` (``respline serve --record DIR``)."""

    __slots__ = ("_f",)

    def __init__(self, directory: Path | None) -> None:
        self._f = open(directory / "upstream.sse", "wb") if directory is not None else None  # noqa: SIM115

    def write(self, chunk: bytes) -> None:
        if self._f is not None:
            self._f.write(chunk)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _as_input(item: dict[str, Any]) -> dict[str, Any]:
    """A stored output item, made acceptable as an input item (drop output-only keys)."""
    if item.get("type") == "message" and item.get("role") == "assistant":
        return {"type": "message", "role": "assistant", "content": item.get("content") or [], "id": item.get("id")}
    return item


def load_secret(cfg: Config) -> bytes:
    """The server secret: from config (or its $ENV), else generated once and kept in secret_file."""
    from adapters.config import expand_env

    value = expand_env(cfg.server.secret, "server.secret")
    if value:
        return value.encode()
    path = Path(cfg.server.secret_file)
    try:
        data = path.read_bytes().strip()
        if data:
            return data
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = os.urandom(32).hex().encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret


__all__ = ["Gateway", "Turn", "Route", "load_secret"]
