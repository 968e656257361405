"""How each upstream says it failed, read into respline's errors: one module per provider family.

Two ways an upstream fails, both read in the same module per family:
- it refuses the request: an HTTP status with an error body, read into an ApiError the client
  gets as an error envelope (``error`` of the kind's provider, engine/registry.py);
- it fails mid-stream: an error inside the stream, read by the kind's decoder into an
  UpstreamError (``error`` event + ``response.failed``).

    common.py     what every family's refusal shares: the status -> code defaults, the headers
                  passed on, the message when the body says nothing
    openai.py     OpenAI envelopes: a Chat Completions upstream (both ways), a Responses
                  upstream's refusals (its stream's errors are read by the Responses normaliser)
    anthropic.py  an Anthropic Messages upstream (both ways)

A kind whose decoder lives in its own package reads its errors there too, on top of common.py
(Gemini: adapters/providers/gemini/errors.py), as a plug-in would.
"""
