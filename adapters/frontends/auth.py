"""Client keys: each configured key is its own tenant."""

from __future__ import annotations

import hashlib
import hmac

from respline.adapters.frontends.asgi import header
from respline.engine.errors import ApiError


class Auth:
    """Client keys from the config; each key is its own tenant. Compared in constant time.

    The tenant id is a digest of the key, so no plain key is ever kept beyond this object.
    """

    def __init__(self, keys: list[str], tenants: dict[str, str] | None = None) -> None:
        self._keys = [(k.encode(), (tenants or {}).get(k) or _tenant_of(k)) for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def tenant(self, authorization: str | None, x_api_key: str | None = None) -> str:
        if not self._keys:
            return "default"
        token = None
        if authorization and authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
        elif x_api_key:
            token = x_api_key.strip()
        if not token:
            raise ApiError(
                401,
                "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.",
                code="missing_api_key",
                type="invalid_request_error",
            )
        given = token.encode()
        found = None
        for key, tenant in self._keys:  # check every key: the time taken does not say which matched
            if hmac.compare_digest(key, given):
                found = tenant
        if found is None:
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key", type="invalid_request_error")
        return found

    def scope_tenant(self, scope: dict) -> str:
        """The tenant of an ASGI request or upgrade, from its own headers."""
        return self.tenant(header(scope, b"authorization"), header(scope, b"x-api-key"))


def _tenant_of(key: str) -> str:
    return "t_" + hashlib.sha256(key.encode()).hexdigest()[:24]
