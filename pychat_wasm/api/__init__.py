"""The engine as a library: `LLM` (llm.py) with llama-cpp-python's method names; each call runs the
ChatSession through a Generation (generation.py) and answers in OpenAI's shapes (shapes.py), its arguments
checked by options.py. Pure Python + numpy like the engine, so it runs in Pyodide too; the HTTP server that
serves it (pychat_wasm/server/) is native only."""
from .llm import LLM

__all__ = ["LLM"]
