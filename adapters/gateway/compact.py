"""``POST /v1/responses/compact``: the routed upstream summarises the context, and the summary
comes back sealed in a ``compaction`` item (engine/compaction.py builds the summary request)."""

from __future__ import annotations

from typing import Any

import msgspec

from respline.engine import compaction
from respline.engine.errors import ApiError, decode_json
from respline.engine.ids import Ids
from respline.engine.seal import Sealer
from respline.engine.wire.responses import MessageItem, OutputText

_compact_decoder = msgspec.json.Decoder(compaction.CompactRequest)


class Compact:
    """The gateway's compact endpoint (a part of ``Gateway``): one turn through
    ``prepare_request``, ``open_upstream`` and ``collect``, its text sealed."""

    ids: Ids
    sealer: Sealer

    async def compact(self, body: bytes, tenant: str) -> dict[str, Any]:
        """``POST /v1/responses/compact``: the routed upstream summarises the context; the
        summary comes back sealed in a ``compaction`` item."""
        req = decode_json(_compact_decoder, body if body.strip() else b"{}")
        if not req.model:
            raise ApiError(400, "Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
        if req.input is None and req.previous_response_id is None:
            raise ApiError(400, "Nothing to compact: give 'input' or 'previous_response_id'.", param="input", code="missing_required_parameter")
        summary_req = compaction.summary_request(req)
        summary_req.previous_response_id = req.previous_response_id
        turn = await self.prepare_request(summary_req, tenant, encoding=None)
        turn.store = False
        upstream = await self.open_upstream(turn)
        resp = await self.collect(turn, upstream)
        if resp.status == "failed" and resp.error is not None:
            raise ApiError(502, resp.error.message, code=resp.error.code, type="server_error")
        text = "".join(
            part.text
            for item in resp.output
            if isinstance(item, MessageItem)
            for part in item.content
            if isinstance(part, OutputText)
        )
        return {
            "id": resp.id,
            "object": "response.compaction",
            "created_at": resp.created_at,
            "output": [
                {
                    "type": "compaction",
                    "id": self.ids.new("cmp_"),
                    "encrypted_content": self.sealer.seal_summary(tenant, text),
                }
            ],
            "usage": msgspec.to_builtins(resp.usage) if resp.usage is not None else None,
        }
