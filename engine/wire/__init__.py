"""msgspec Structs for every wire format respline speaks."""
