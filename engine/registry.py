"""The provider registry: every provider kind respline can talk to, found by entry point.

A provider kind (``openai-chat``, ``anthropic``, ``gemini``, a plug-in's own) is one package that
declares a ``ProviderKind`` and registers it under the ``respline.providers`` entry-point group:

    [project.entry-points."respline.providers"]
    my-kind = "my_package:KIND"

respline's built-in kinds register themselves the same way (pyproject.toml), so a provider
shipped as its own pip package needs no edit to respline: the config (``kind = "my-kind"``), the
CLI's choices, ``respline replay --kind`` and the fixture regenerator all read this registry.

The engine never imports an adapter: the entry points are loaded on first use, by name.
"""

from __future__ import annotations

import logging
from dataclasses import KW_ONLY, dataclass
from importlib.metadata import entry_points
from typing import Any, Callable

GROUP = "respline.providers"

log = logging.getLogger("respline.registry")


class RegistryError(Exception):
    pass


@dataclass(eq=False, repr=False, slots=True)
class ProviderKind:
    """What one provider kind declares.

    - ``name``: the ``kind`` a config names it by (and its entry point's name);
    - ``config``: its config Struct, a subclass of ``adapters.config.ProviderConfig`` tagged with
      ``name`` (``tag=name``), so the providers table decodes as a tagged union on ``kind`` and
      an unknown key is named for the kind that does not take it;
    - ``provider``: the class built once per configured provider: ``prepare`` (its request
      translator and pipeline) and ``error`` (its upstream error parser);
    - ``pipeline``: ``(template, ids, clock, *, encoding, reasoning_dialect, tools, seal_reasoning,
      think_tags, max_tool_calls) -> ResponsePipeline``: its head stages in front of the builder
      (``respline replay`` and the fixtures use it without a provider);
    - ``error``: ``(status, body, headers) -> ApiError``, the upstream's refusal read;
    - ``build``: optional ``(kind, name, provider_config, config, *, wrap, shared) -> (provider,
      client)``, for a kind that makes its own transport (the demo, the cassette replay); by
      default an HTTP provider over the upstream pool. ``wrap``, when not None (``serve
      --record``), is ``wrap(transport[, as_kind])``: the transport to use instead, recorded;
      ``shared`` is one dict per server, for what the kind's providers share;
    - ``upstream``: False for a kind that needs no upstream (the demo): not offered by
      ``--upstream-kind`` nor ``respline replay --kind``;
    - ``models``: the model names a provider of this kind serves with no route configured;
    - ``fixtures``: its folder under fixtures/ (recorded streams with their expected output).
    """

    name: str
    _: KW_ONLY
    config: type
    provider: type
    pipeline: Callable[..., Any]
    error: Callable[..., Any]
    build: Callable[..., Any] | None = None
    upstream: bool = True
    models: tuple[str, ...] = ()
    fixtures: str | None = None

    def __repr__(self) -> str:
        return f"ProviderKind({self.name!r})"


_kinds: dict[str, ProviderKind] | None = None
_broken: dict[str, str] = {}  # kind -> why its entry point did not load


def kinds() -> dict[str, ProviderKind]:
    """Every registered kind by name, sorted by name; loaded once per process. A plug-in whose
    entry point does not load (its module missing, an import error) is left out with a warning,
    so a broken third-party package cannot stop respline serving its other kinds; a config that
    names it is refused with the reason (``broken``)."""
    global _kinds
    if _kinds is None:
        found: dict[str, ProviderKind] = {}
        for ep in entry_points(group=GROUP):
            try:
                kind = ep.load()
            except Exception as exc:  # noqa: BLE001 - any failure of a plug-in's import
                _broken[ep.name] = f"{ep.value}: {exc.__class__.__name__}: {exc}"
                log.warning("provider kind %r not loaded (%s)", ep.name, _broken[ep.name])
                continue
            if not isinstance(kind, ProviderKind) or kind.name != ep.name:
                raise RegistryError(f"entry point {GROUP}:{ep.name} ({ep.value}) is not a ProviderKind named {ep.name!r}")
            if ep.name in found and found[ep.name] is not kind:
                raise RegistryError(f"two packages register the provider kind {ep.name!r}")
            found[ep.name] = kind
        _kinds = dict(sorted(found.items()))
    return _kinds


def broken() -> dict[str, str]:
    """Kinds whose entry point failed to load, with the reason."""
    kinds()
    return _broken


def get(name: str) -> ProviderKind:
    try:
        return kinds()[name]
    except KeyError:
        why = f": it failed to load ({_broken[name]})" if name in _broken else f" (registered: {', '.join(kinds())})"
        raise RegistryError(f"no provider kind {name!r}{why}") from None


def names(upstream: bool = False) -> list[str]:
    """The registered kinds' names; ``upstream=True``: only those that talk to an upstream."""
    return [k.name for k in kinds().values() if k.upstream or not upstream]
