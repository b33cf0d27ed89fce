"""Typed errors. Every failure a user can cause has its own class and a message that says what to do."""
from __future__ import annotations


class PychatError(Exception):
    """Base class of every error pychat_wasm raises on purpose."""


class GGUFError(PychatError, ValueError):
    """The bytes are not a GGUF file we can read."""


class NotGGUFError(GGUFError):
    """The file does not start with the GGUF magic (often a saved web page or an LFS pointer)."""


class UnsupportedVersionError(GGUFError):
    """A GGUF version other than 2 or 3, or a big-endian file."""


class TruncatedFileError(GGUFError):
    """The file ends before the header or a tensor's data does."""


class HeaderTruncatedError(TruncatedFileError):
    """The first bytes of a file given to describe it end before its header does: fetch more of them,
    at least `needed_bytes` from the start (what the header read so far says must be there)."""

    def __init__(self, message: str, needed_bytes: int = 0):
        super().__init__(message)
        self.needed_bytes = needed_bytes


class CorruptHeaderError(GGUFError):
    """The header holds impossible values: absurd counts, lengths or offsets."""


class NestedArrayError(CorruptHeaderError):
    """A metadata array whose elements are arrays: llama.cpp and gguf-py refuse them, and so do we."""


class DuplicateKeyError(CorruptHeaderError):
    """The same metadata key twice: readers would disagree about which value holds (llama.cpp refuses)."""


class DuplicateTensorError(CorruptHeaderError):
    """Two tensors with the same name."""


class OverlappingTensorsError(CorruptHeaderError):
    """Two tensors whose data share bytes: writing one would change the other."""


class InvalidModelError(GGUFError):
    """The tensors or hyperparameters contradict the architecture: a missing tensor, a shape that disagrees
    with the metadata, head counts that do not divide, a vocabulary that does not match the embedding,
    NaN or infinite weights."""


class UnknownTensorTypeError(GGUFError):
    """A tensor's ggml type id is not one we know."""


class UnsupportedQuantTypeError(PychatError, ValueError):
    """A known ggml type that this engine cannot dequantize."""


class TokenizerError(PychatError, ValueError):
    """The GGUF tokenizer metadata is missing or unusable."""


class TemplateError(PychatError, ValueError):
    """A chat template failed to render or raised on purpose."""


class UnsupportedArchitectureError(PychatError, ValueError):
    """A model architecture that the engine does not implement."""


class ContextFullError(PychatError):
    """The prompt does not fit into the model's context window."""


class TensorDataError(PychatError, ValueError):
    """A tensor's raw bytes do not fit its type and shape (too few or too many bytes, or rows of partial blocks)."""


class InvalidSettingError(PychatError, ValueError):
    """A setting or argument outside what the model allows (context length, policy, token ids)."""


class InvalidSettingsError(InvalidSettingError):
    """A sampling setting or stop string the user chose that is out of range or not a number: the CLI's options
    and the page's form are checked by the same code (sampler.settings_from_mapping), with the same message."""


class InvalidConversationError(PychatError, ValueError):
    """A conversation to restore whose messages are not {"role": system/user/assistant, "content": text}."""


class NoModelLoadedError(PychatError):
    """A chat call before any model was loaded."""


class TrainingDataError(PychatError, ValueError):
    """Training data that cannot be used (unreadable, empty, of the wrong shape, too large for memory), or
    settings it cannot meet (a vocabulary below 256 bytes)."""


class GGUFWriteError(PychatError, ValueError):
    """Input the GGUF writer or its quantizers cannot encode: bad metadata, duplicate names, bad tensors."""


class CheckpointError(PychatError, ValueError):
    """A training checkpoint that is missing, damaged or made for another run."""


class NotEnoughMemoryError(PychatError):
    """Work that would not fit the memory it may use (the browser gives each worker at most 4 GiB)."""


class GrammarError(PychatError, ValueError):
    """A GBNF grammar or JSON schema that cannot constrain output: malformed text (with line and column), an
    undefined or left-recursive rule, a schema keyword the converter does not support, or a grammar too large."""


class ConstraintFileError(PychatError, ValueError):
    """A file given to constrain the chat's answers (`pychat-wasm chat --json-schema FILE`, `--grammar FILE`) that
    cannot: unreadable, not UTF-8 text, not a JSON object, or a schema or grammar that GrammarError refuses; the
    message names the option and the file."""


class InvalidRequestError(PychatError, ValueError):
    """A call of the library API (pychat_wasm.LLM) or a request to its HTTP server with an argument of the wrong
    type or out of range; `param` names the argument, as OpenAI's error object does."""

    def __init__(self, message: str, param: str = ""):
        super().__init__(message)
        self.param = param


class AdapterError(GGUFError):
    """A file given as a LoRA adapter that is not one llama.cpp's way (general.type "adapter", adapter.type
    "lora", <tensor>.lora_a / .lora_b pairs), or that adapts a tensor this engine cannot adapt."""


class AdapterMismatchError(AdapterError):
    """A LoRA adapter made for another base model: its architecture, a tensor's shape or the recorded hash of
    its base file differ from the model it is applied to. The message names both."""
