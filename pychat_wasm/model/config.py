"""What a model is: its architecture's traits, its hyperparameters and its tensors, as GGUF describes them.

The one owner of these facts; the rest of the engine derives from the three tables:

    ARCHITECTURES     the supported architectures as flags (ArchTraits): where each differs from llama
    HYPERPARAMETERS   the `<arch>.` metadata keys and the ModelConfig fields they give: ModelConfig.from_gguf
                      reads them, train/export.py writes them, info.py shows them
    TENSORS           the tensor schema: per tensor its GGUF name, shape, when it is needed and how a worker of
                      a sharded model cuts it. check.py checks files against it, weights.py loads it,
                      tensor_parallel.py cuts it, the trainer initialises and adapts it

    llama   (SmolLM2, TinyLlama, Llama 2/3, Mistral)  RMSNorm, GQA attention, SwiGLU FFN
    qwen2   = llama + biases on q, k, v; RoPE rotates dimension i with i + head_dim/2
    qwen3   = qwen2's RoPE without biases + RMSNorm of each head's q and k; head_dim from attention.key_length
    gemma3  = qwen3 + embeddings scaled by sqrt(dim), norms after attention and FFN, GELU (tanh) FFN, and 5
              of every 6 layers attending only to a sliding window (with their own RoPE base)
    phi3    = qwen3's RoPE, no q/k norms; q, k and v stored as one matrix, the FFN's gate and up as another

A new architecture is a row of ARCHITECTURES (and TENSORS rows if it has new tensors), plus the forward
pass's new math if there is any. References: llama.cpp's src/llama-model.cpp (the tensors each
architecture loads), transformers' modeling_llama / qwen2 / qwen3 / gemma3 / phi3.

    >>> ARCHITECTURES["qwen3"].qk_norm, ARCHITECTURES["phi3"].fused_qkv
    (True, True)
    >>> needed("required if fused_qkv else absent", ARCHITECTURES["llama"])
    'absent'
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, NamedTuple, Optional, Tuple

from ..errors import GGUFError, InvalidModelError, InvalidSettingError, UnsupportedArchitectureError
from ..gguf.reader import GGUFFile

DEFAULT_CONTEXT_CAP = 4096  # KV cache for SmolLM2 at 4096 positions: 189 MB
MAX_RMS_EPS = 1.0  # real models use 1e-5 or 1e-6; anything this large is a corrupt header
_REQUIRED = object()


# ----------------------------------------------------------------------------------------------
# Architectures


@dataclass(frozen=True)
class ArchTraits:
    """How an architecture differs from llama; every flag's default is llama's."""
    rope_style: str = "interleaved"  # "interleaved": RoPE rotates pairs (0, 1), (2, 3)...; "neox": (i, i + head_dim/2)
    activation: str = "silu"  # nonlinearity of the FFN gate
    scale_embeddings: bool = False  # multiply token embeddings by sqrt(dim)
    global_layer_every: int = 0  # with a sliding window, every n-th layer still sees the whole context
    local_rope_base: float = 0.0  # RoPE base of the sliding-window layers
    qk_norm: bool = False  # RMSNorm of each head's q and k before RoPE (other architectures: if the file has them)
    post_norms: bool = False  # RMSNorm of the attention and FFN outputs before their residuals
    qkv_bias: bool = False  # q, k, v biases are read when the file has them
    fused_qkv: bool = False  # attn_qkv.weight holds the rows of q, then k, then v
    fused_gate_up: bool = False  # ffn_up.weight holds the rows of the FFN's gate, then its up


ARCHITECTURES = {
    # llama.cpp's converter permutes llama's q/k rows so that RoPE pairs adjacent dimensions
    # (transformers' GGUF loader permutes them back and rotates halves: the same numbers).
    "llama": ArchTraits(qkv_bias=True),
    "qwen2": ArchTraits(rope_style="neox", qkv_bias=True),
    # Not in Gemma 3 GGUF files, so known here (as in llama.cpp and transformers):
    # layers 5, 11, 17... are global, the others use the window with RoPE base 10000.
    "gemma3": ArchTraits(rope_style="neox", activation="gelu_tanh", scale_embeddings=True, global_layer_every=6,
                         local_rope_base=10000.0, qk_norm=True, post_norms=True),
    "qwen3": ArchTraits(rope_style="neox", qk_norm=True),
    "phi3": ArchTraits(rope_style="neox", fused_qkv=True, fused_gate_up=True),
}


# ----------------------------------------------------------------------------------------------
# Typed metadata values


def metadata_int(gguf_file: GGUFFile, suffix: str, default: Any = _REQUIRED) -> int:
    """The integer `<arch>.<suffix>`; GGUFError if it is missing (and required) or not an integer."""
    value = _metadata(gguf_file, suffix, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidModelError("%s: metadata %s must be an integer, got %r: the file is corrupt"
                                % (gguf_file.name, _key(gguf_file, suffix), short_value(value)))
    return value


def metadata_float(gguf_file: GGUFFile, suffix: str, default: Any = _REQUIRED) -> float:
    """The finite number `<arch>.<suffix>`; GGUFError if it is missing (and required), not a number or not finite."""
    value = _metadata(gguf_file, suffix, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidModelError("%s: metadata %s must be a finite number, got %r: the file is corrupt"
                                % (gguf_file.name, _key(gguf_file, suffix), short_value(value)))
    return float(value)


def _metadata(gguf_file: GGUFFile, suffix: str, default: Any) -> Any:
    value = gguf_file.arch_value(suffix)
    if value is None:
        if default is _REQUIRED:
            raise GGUFError("%s lacks the metadata key %s" % (gguf_file.name, _key(gguf_file, suffix)))
        return default
    return value


def _key(gguf_file: GGUFFile, suffix: str) -> str:
    return "%s.%s" % (gguf_file.metadata.get("general.architecture"), suffix)


def short_value(value: Any) -> Any:
    """A metadata value cut short enough to quote in a message."""
    return value[:8] if isinstance(value, (list, str)) else value


# ----------------------------------------------------------------------------------------------
# Hyperparameters


class Hyperparameter(NamedTuple):
    key: str  # after the `<arch>.` prefix, in llama.cpp's naming
    field: str  # the ModelConfig field it gives; from_gguf reads the first row of each field
    kind: type = int


HYPERPARAMETERS = (
    Hyperparameter(key="context_length", field="trained_context_length"),
    Hyperparameter(key="embedding_length", field="dim"),
    Hyperparameter(key="block_count", field="n_layers"),
    Hyperparameter(key="feed_forward_length", field="ffn_dim"),
    Hyperparameter(key="attention.head_count", field="n_heads"),
    Hyperparameter(key="attention.head_count_kv", field="n_kv_heads"),
    Hyperparameter(key="attention.key_length", field="head_dim"),
    Hyperparameter(key="attention.value_length", field="head_dim"),  # must agree (check_config)
    Hyperparameter(key="attention.layer_norm_rms_epsilon", field="rms_eps", kind=float),
    Hyperparameter(key="attention.sliding_window", field="sliding_window"),
    Hyperparameter(key="rope.freq_base", field="rope_base", kind=float),
    Hyperparameter(key="rope.dimension_count", field="head_dim"),  # must agree (check_config)
    Hyperparameter(key="vocab_size", field="vocab_size"),  # must agree with the embedding (check.py)
)


def _read(gguf_file: GGUFFile, field: str, default: Any = _REQUIRED) -> Any:
    """The metadata value that gives ModelConfig's `field` (the first HYPERPARAMETERS row naming it)."""
    row = next(h for h in HYPERPARAMETERS if h.field == field)
    return (metadata_float if row.kind is float else metadata_int)(gguf_file, row.key, default)


@dataclass(frozen=True)
class ModelConfig:
    arch: str  # a key of ARCHITECTURES
    n_layers: int
    dim: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    vocab_size: int
    context_length: int  # the limit this model enforces (KV cache size)
    trained_context_length: int  # what the file says the model was trained for
    rms_eps: float
    rope_base: float
    sliding_window: int = 0  # 0: every layer attends to the whole context

    @property
    def traits(self) -> ArchTraits:
        return ARCHITECTURES[self.arch]

    @property
    def rope_style(self) -> str:
        return self.traits.rope_style

    @property
    def activation(self) -> str:
        return self.traits.activation

    @property
    def embed_scale(self) -> float:
        return math.sqrt(self.dim) if self.traits.scale_embeddings and self.dim > 0 else 1.0

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @classmethod
    def from_gguf(cls, gguf_file: GGUFFile, context_length: Optional[int] = None) -> "ModelConfig":
        arch = gguf_file.metadata.get("general.architecture")
        if not isinstance(arch, str) or arch not in ARCHITECTURES:
            raise UnsupportedArchitectureError("%s has architecture %r; supported architectures: %s"
                                               % (gguf_file.name, short_value(arch), ", ".join(ARCHITECTURES)))
        dim, n_heads, trained = _read(gguf_file, "dim"), _read(gguf_file, "n_heads"), \
            _read(gguf_file, "trained_context_length")
        if context_length is None:
            context_length = min(trained, DEFAULT_CONTEXT_CAP)
        embedding = gguf_file.tensors.get("token_embd.weight")
        if embedding is None or len(embedding.shape) != 2:
            raise InvalidModelError("%s lacks the 2-D tensor token_embd.weight: the file is incomplete or corrupt"
                                    % gguf_file.name)
        config = cls(
            arch=arch, n_layers=_read(gguf_file, "n_layers"), dim=dim, n_heads=n_heads,
            n_kv_heads=_read(gguf_file, "n_kv_heads", n_heads),
            head_dim=_read(gguf_file, "head_dim", dim // max(n_heads, 1)), ffn_dim=_read(gguf_file, "ffn_dim"),
            vocab_size=embedding.shape[0], context_length=context_length, trained_context_length=trained,
            rms_eps=_read(gguf_file, "rms_eps"), rope_base=_read(gguf_file, "rope_base", 10000.0),
            sliding_window=_read(gguf_file, "sliding_window", 0) if ARCHITECTURES[arch].global_layer_every else 0)
        check_config(config, gguf_file)
        # The one check of a chosen context: the CLI's --context, the page's and check_fit's context_length.
        whole = isinstance(context_length, numbers.Integral) and not isinstance(context_length, bool)
        if not (whole and 1 <= context_length <= trained):
            raise InvalidSettingError("context_length must be between 1 and the model's %d tokens, not %r"
                                      % (trained, context_length))
        return config

    def layer_window(self, layer: int) -> int:
        """How many positions back this layer attends (0: all of them)."""
        is_global = not self.sliding_window or (layer + 1) % self.traits.global_layer_every == 0
        return 0 if is_global else self.sliding_window

    def layer_rope_base(self, layer: int) -> float:
        return self.traits.local_rope_base if self.layer_window(layer) else self.rope_base


def check_config(config: ModelConfig, gguf_file: GGUFFile) -> None:
    """Hyperparameters the forward pass can run with, before any tensor is looked at."""
    name = gguf_file.name
    for field in ("n_layers", "dim", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "vocab_size",
                  "trained_context_length"):
        if getattr(config, field) < 1:
            raise InvalidModelError("%s: %s is %d, it must be at least 1: the file is corrupt"
                                    % (name, field, getattr(config, field)))
    if config.n_heads % config.n_kv_heads:
        raise InvalidModelError("%s: head_count %d is not a multiple of head_count_kv %d: the file is corrupt"
                                % (name, config.n_heads, config.n_kv_heads))
    if config.head_dim % 2:
        raise InvalidModelError("%s: the head dimension %d is odd, RoPE needs pairs: the file is corrupt"
                                % (name, config.head_dim))
    if not 0.0 <= config.rms_eps <= MAX_RMS_EPS:
        raise InvalidModelError("%s: layer_norm_rms_epsilon %g is outside [0, %g]: the file is corrupt"
                                % (name, config.rms_eps, MAX_RMS_EPS))
    if config.rope_base <= 0.0:
        raise InvalidModelError("%s: rope.freq_base %g must be positive: the file is corrupt"
                                % (name, config.rope_base))
    if config.sliding_window < 0:
        raise InvalidModelError("%s: attention.sliding_window %d is negative: the file is corrupt"
                                % (name, config.sliding_window))
    if metadata_int(gguf_file, "attention.value_length", config.head_dim) != config.head_dim:
        raise InvalidModelError("%s: attention.value_length differs from key_length, which this engine does "
                                "not support" % name)
    if metadata_int(gguf_file, "rope.dimension_count", config.head_dim) != config.head_dim:
        raise InvalidModelError("%s: rope.dimension_count differs from the head dimension %d (partial RoPE), "
                                "which this engine does not support" % (name, config.head_dim))


def dims_text(c: ModelConfig) -> str:
    return ("vocab %d, embedding_length %d, head_count %d, head_count_kv %d, head dim %d, feed_forward_length %d"
            % (c.vocab_size, c.dim, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim))


# ----------------------------------------------------------------------------------------------
# Tensors


class TensorSpec(NamedTuple):
    name: str  # GGUF name; a layer's tensors are prefixed "blk.<i>."
    shape: Callable[[ModelConfig], Tuple[int, ...]]  # numpy order: a matrix is [out_features, in_features]
    need: str = "required"  # "required", "optional" (read when present) or "<need> if <trait> else <need>"
    field: Optional[str] = None  # its weights.LayerWeights field
    sharded: Optional[Tuple[str, str]] = None  # a worker keeps these "rows" or "columns": a ShardPlan span
    holds: Tuple[str, ...] = ()  # a fused tensor: the rows of these tensors, stacked in this order


_ATTN_BIAS = "optional if qkv_bias else absent"  # qwen2's files have them; llama.cpp's llama reads them too

MODEL_TENSORS = (
    TensorSpec(name="token_embd.weight", shape=lambda c: (c.vocab_size, c.dim), sharded=("rows", "vocab")),
    TensorSpec(name="output_norm.weight", shape=lambda c: (c.dim,)),
    TensorSpec(name="output.weight", shape=lambda c: (c.vocab_size, c.dim), need="optional",  # else tied
               sharded=("rows", "vocab")),
    TensorSpec(name="rope_freqs.weight", shape=lambda c: (c.head_dim // 2,), need="optional"),  # Llama 3.1+
)

LAYER_TENSORS = (  # in the order the forward pass reads them
    TensorSpec(name="attn_norm.weight", shape=lambda c: (c.dim,), field="attn_norm"),
    TensorSpec(name="attn_q.weight", shape=lambda c: (c.q_dim, c.dim), need="absent if fused_qkv else required",
               field="wq", sharded=("rows", "heads")),
    TensorSpec(name="attn_k.weight", shape=lambda c: (c.kv_dim, c.dim), need="absent if fused_qkv else required",
               field="wk", sharded=("rows", "kv_heads")),
    TensorSpec(name="attn_v.weight", shape=lambda c: (c.kv_dim, c.dim), need="absent if fused_qkv else required",
               field="wv", sharded=("rows", "kv_heads")),
    TensorSpec(name="attn_qkv.weight", shape=lambda c: (c.q_dim + 2 * c.kv_dim, c.dim),
               need="required if fused_qkv else absent", holds=("attn_q.weight", "attn_k.weight", "attn_v.weight")),
    TensorSpec(name="attn_q.bias", shape=lambda c: (c.q_dim,), need=_ATTN_BIAS, field="q_bias",
               sharded=("rows", "heads")),
    TensorSpec(name="attn_k.bias", shape=lambda c: (c.kv_dim,), need=_ATTN_BIAS, field="k_bias",
               sharded=("rows", "kv_heads")),
    TensorSpec(name="attn_v.bias", shape=lambda c: (c.kv_dim,), need=_ATTN_BIAS, field="v_bias",
               sharded=("rows", "kv_heads")),
    TensorSpec(name="attn_q_norm.weight", shape=lambda c: (c.head_dim,), need="required if qk_norm else optional",
               field="q_norm"),
    TensorSpec(name="attn_k_norm.weight", shape=lambda c: (c.head_dim,), need="required if qk_norm else optional",
               field="k_norm"),
    TensorSpec(name="attn_output.weight", shape=lambda c: (c.dim, c.q_dim), field="wo", sharded=("columns", "heads")),
    TensorSpec(name="post_attention_norm.weight", shape=lambda c: (c.dim,),
               need="required if post_norms else optional", field="post_attn_norm"),
    TensorSpec(name="ffn_norm.weight", shape=lambda c: (c.dim,), field="ffn_norm"),
    TensorSpec(name="ffn_gate.weight", shape=lambda c: (c.ffn_dim, c.dim),
               need="absent if fused_gate_up else required", field="w_gate", sharded=("rows", "ffn")),
    TensorSpec(name="ffn_up.weight", shape=lambda c: (c.ffn_dim, c.dim),
               need="absent if fused_gate_up else required", field="w_up", sharded=("rows", "ffn")),
    TensorSpec(name="ffn_up.weight", shape=lambda c: (2 * c.ffn_dim, c.dim),  # phi3's gate and up in one
               need="required if fused_gate_up else absent", holds=("ffn_gate.weight", "ffn_up.weight")),
    TensorSpec(name="ffn_down.weight", shape=lambda c: (c.dim, c.ffn_dim), field="w_down",
               sharded=("columns", "ffn")),
    TensorSpec(name="post_ffw_norm.weight", shape=lambda c: (c.dim,), need="required if post_norms else optional",
               field="post_ffn_norm"),
)

TENSORS = MODEL_TENSORS + LAYER_TENSORS
# Tensors of variants this engine does not run: a file that has them is refused rather than run wrongly.
UNSUPPORTED_TENSORS = {"rope_factors_long.weight": "LongRoPE scaling (Phi-3 128k)",
                       "rope_factors_short.weight": "LongRoPE scaling (Phi-3 128k)"}
UNFUSED = {spec.name: spec for spec in TENSORS if not spec.holds}  # a fused tensor's parts, by name


def needed(rule: str, traits: ArchTraits) -> str:
    """A TensorSpec's need for an architecture: "required", "optional" or "absent" (not read)."""
    words = rule.split()
    if len(words) == 1:
        return rule
    then, _, trait, _, otherwise = words  # "<need> if <trait> else <need>"
    return then if getattr(traits, trait) else otherwise


def layer_tensors(config: ModelConfig) -> List[Tuple[TensorSpec, Tuple[int, ...], bool]]:
    """(spec, numpy shape, required) of each tensor a layer of this architecture may have."""
    return [(spec, spec.shape(config), needed(spec.need, config.traits) == "required")
            for spec in LAYER_TENSORS if needed(spec.need, config.traits) != "absent"]


def expected_shapes(config: ModelConfig) -> Iterator[Tuple[str, Tuple[int, ...], bool]]:
    """(name, numpy shape, required) of every tensor the forward pass may read, in llama.cpp's naming.

    Optional tensors (biases, rope_freqs, a separate output head) are used when present, as in llama.cpp.
    """
    for spec in MODEL_TENSORS:
        yield spec.name, spec.shape(config), spec.need == "required"
    layer = layer_tensors(config)
    for i in range(config.n_layers):
        for spec, shape, required in layer:
            yield "blk.%d.%s" % (i, spec.name), shape, required
