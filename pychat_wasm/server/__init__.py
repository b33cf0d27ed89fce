"""The HTTP server of `pychat-wasm serve` (app.py): native only, with the `server` extra; the browser never
imports it."""
