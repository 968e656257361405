"""Pipeline stages: small synchronous state machines with ``feed`` and ``close`` (h11 style)."""
