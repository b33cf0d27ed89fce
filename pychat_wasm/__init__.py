"""pychat_wasm: a readable pure-Python/numpy GGUF inference engine that also runs in the browser.

Runs on CPython + numpy natively and on Pyodide 0.27 (Python 3.12 + numpy 2.0) in the browser; the
code still keeps to Python 3.8 and numpy 1.17 features, so it also runs where those are all there is.
"""
__version__ = "0.1.0"


def __getattr__(name: str):
    """`pychat_wasm.LLM` (the library API, pychat_wasm/api/), imported on first use."""
    if name == "LLM":
        from .api import LLM
        return LLM
    raise AttributeError("module 'pychat_wasm' has no attribute %r" % name)
