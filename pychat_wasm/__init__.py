"""pychat_wasm: a readable pure-Python/numpy GGUF inference engine that also runs in the browser.

Runs on CPython 3.11 + numpy 2.x and on Pyodide 0.17 (Python 3.8 + numpy 1.17), so every
module keeps to the language and numpy features both have.
"""
__version__ = "0.1.0"
