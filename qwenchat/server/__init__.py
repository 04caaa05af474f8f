"""`qwenchat serve`: the engine behind the OpenAI-compatible HTTP API.

One module per concept: `app` (the ASGI app factory), `routes` (the endpoints), `schemas` (request
models and their validation), `body` (reading a JSON body within a size limit), `options`
(request fields -> GenerateOptions), `backend` (the loaded engine, stateless requests),
`saving` (`--save`: requests stored through ChatSession), `jobs` (the one-at-a-time generation
queue), `text_batches` (streamed text handed to the event loop a few tokens at a time), `responses` (OpenAI response and stream-chunk objects), `errors` (OpenAI error bodies),
`access_log` (one stderr line per request), `run` (binding, signals, the uvicorn server) and
`extra` (the check that the optional `serve` dependencies are installed).

Nothing here is imported by `import qwenchat`; the server's dependencies (starlette, uvicorn,
sse-starlette, pydantic) come with `pip install 'qwenchat[serve]'`.
"""
