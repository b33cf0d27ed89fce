"""The transformer's forward pass, top to bottom.

The architectures (llama, qwen2, qwen3, gemma3, phi3) differ only in a few named places: their traits and
tensors are in config.py; the forward pass applies what a layer's weights have (biases, q/k norms, norms
after attention and FFN), and phi3's fused matrices arrive already cut into q, k, v, gate and up (weights.py).
q/k/v and gate/up are then multiplied as one stacked matrix each (stacked.py), under the float32 and int8 policies.

forward() takes any number of tokens and runs them as matrices of up to FORWARD_BATCH_TOKENS rows, which
bounds its memory for callers that pass a whole prompt (tests, benchmarks). The chat session passes smaller
pieces on its own (session.PROMPT_CHUNK, so it can report progress and see a Stop between them), then one
token at a time; every call writes keys and values into a preallocated KV cache. The numpy building blocks
(rms_norm, RoPE, masks) are in layers.py. References: llama2.c's run.c, transformers' modeling_llama /
modeling_qwen2 / modeling_qwen3 / modeling_gemma3 / modeling_phi3, llama.cpp's src/models/.

    >>> model = Model.from_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")    # doctest: +SKIP
    >>> logits = model.forward([1, 9690, 198], start_pos=0)             # -> [vocab]  # doctest: +SKIP
    >>> logits = model.forward([int(logits.argmax())], start_pos=3)     # doctest: +SKIP
    >>> model.forward([1, 9690], start_pos=0, logits=False)            # fills the cache only  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ContextFullError, InvalidModelError, InvalidSettingError
from ..gguf.reader import GGUFFile
from .kv_cache import KVCache
from .config import ModelConfig
from .weights import LayerWeights, gguf_matrix, gguf_vector, load_layer, load_output_head
from .lora import AdaptedMatrix, LoraAdapter, low_rank_updates
from .layers import ACTIVATIONS, apply_rope, attention_mask, rms_norm, rope_angles, rope_frequencies, softmax
from .stacked import StackedLayer, gate_up_products, qkv_products, stack_layer, without_adapted
from .tensor_parallel import Collective, ShardPlan, head_blocks

FORWARD_BATCH_TOKENS = 256  # tokens per pass through the layers: bounds the scores to [heads, 256, context]


# ----------------------------------------------------------------------------------------------
# The model


def feed_forward(x: np.ndarray, w: LayerWeights, stacked: StackedLayer, activation: str) -> np.ndarray:
    gate, up = gate_up_products(x, w, stacked)  # [n, ffn_dim] each
    return w.w_down.matmul(ACTIVATIONS[activation](gate) * up)  # [n, ffn_dim] -> [n, dim] (a shard's partial sum)


class Model:
    """The forward pass; with `shard` and `collective`, one worker's part of a model split across workers
    (tensor_parallel.py): the same calls, the same logits, 1/N of the weights and of the work."""

    def __init__(self, gguf_file: GGUFFile, config: ModelConfig, policy: str, shard: Optional[ShardPlan] = None,
                 collective: Optional[Collective] = None):
        self.config, self.policy, self.shard, self.collective = config, policy, shard, collective
        self.token_embedding = gguf_matrix(gguf_file, "token_embd.weight")  # rows dequantized per lookup
        self.layers = [load_layer(gguf_file, config, i, policy, shard) for i in range(config.n_layers)]
        # q/k/v and gate/up stacked into one matrix each (stacked.py); a worker stacks its own rows of them
        self.layers, self.stacked = map(list, zip(*(stack_layer(w) for w in self.layers)))
        self.output_norm = gguf_vector(gguf_file, "output_norm.weight")
        self.rope_factors = gguf_vector(gguf_file, "rope_freqs.weight")  # [head_dim/2] or None
        # Looked up per layer at every token, so worked out once: RoPE base and window per layer, and the
        # RoPE frequencies [head_dim/2] of each distinct base.
        self.layer_rope_bases = [config.layer_rope_base(i) for i in range(config.n_layers)]
        self.layer_windows = [config.layer_window(i) for i in range(config.n_layers)]
        self.inv_freqs = {base: rope_frequencies(config.head_dim, base, self.rope_factors)
                          for base in set(self.layer_rope_bases)}
        self.output = load_output_head(gguf_file, self.token_embedding, policy, shard)  # [vocab (this worker's rows), dim]
        # This worker's query heads, in blocks of equal GQA groups (one block unless the model is sharded)
        self.head_blocks = head_blocks(shard, config.n_heads, config.n_kv_heads)
        self.n_kv_heads = sum(b.n_kv for b in self.head_blocks)  # KV and query heads this worker computes
        self.n_heads = sum(b.n_kv * b.group for b in self.head_blocks)
        self.cache = KVCache(config.n_layers, self.n_kv_heads, config.context_length, config.head_dim)
        self.adapters: List[Tuple[LoraAdapter, float]] = []  # applied LoRA adapters and their scales
        self._unadapted = (self.layers, self.output, self.stacked)

    @classmethod
    def from_plan(cls, plan, collective: Optional[Collective] = None) -> "Model":
        """Build what a LoadPlan (load_plan.py) decided: nothing is parsed or checked again. `collective`: the
        workers of a split model (tensor_parallel.py)."""
        return cls(plan.gguf, plan.config, plan.policy, plan.shard, collective)

    @classmethod
    def from_gguf(cls, gguf_file, policy: str = "auto", context_length: Optional[int] = None,
                  memory_limit: Optional[int] = None, workers: int = 1, rank: int = 0,
                  collective: Optional[Collective] = None) -> "Model":
        """Plan the load of a GGUFFile or a path (load_plan.plan_model: policy "auto" or one of
        matrices.POLICIES; "auto" against memory_limit, default the heap) and build it; workers, rank and
        collective: this worker's part of a model split across workers."""
        from .fit_check import MODEL_HEAP
        from .load_plan import plan_model

        if not isinstance(gguf_file, GGUFFile):
            gguf_file = GGUFFile.open(gguf_file)
        limit = MODEL_HEAP if memory_limit is None else memory_limit
        return cls.from_plan(plan_model(gguf_file, context_length, policy, limit, workers, rank), collective)

    def set_adapters(self, adapters: Sequence[Tuple[LoraAdapter, float]]) -> None:
        """Apply LoRA adapters [(adapter, scale)] (lora.py: read and checked against this model's file) in place of
        those applied before; [] removes them. The stored weights never change, so removal is exact; the KV
        cache is emptied, since its keys and values came from the previous weights."""
        updates = low_rank_updates(adapters, self.config, self.shard)  # AdapterError before anything changes
        layers, output, stacked = self._unadapted
        self.layers = [w._replace(**{field: AdaptedMatrix(getattr(w, field), updates[(i, field)])
                                     for (layer, field) in updates if layer == i})
                       for i, w in enumerate(layers)]
        self.stacked = [without_adapted(s, [field for (layer, field) in updates if layer == i])
                        for i, s in enumerate(stacked)]
        self.output = AdaptedMatrix(output, updates[(-1, "output")]) if (-1, "output") in updates else output
        self.adapters = list(adapters)
        del self.cache.ids[:]

    def memory_bytes(self) -> int:
        """Bytes of weights and KV cache this model reads from (quantized weights are views of the file)."""
        arrays = [self.token_embedding, self.output, self.output_norm, self.rope_factors, self.cache]
        arrays += [part for layer in self.layers for part in layer]
        unique = {id(a): a for a in arrays if a is not None}
        return sum(int(a.nbytes) for a in unique.values())

    def forward(self, tokens: Sequence[int], start_pos: int, all_logits: bool = False,
                logits: bool = True) -> Optional[np.ndarray]:
        """Run `tokens` at positions start_pos...; logits [len(tokens), vocab] if all_logits else [vocab].

        logits=False only fills the KV cache and returns None: the final norm and the vocabulary head, the
        largest product of a prompt chunk whose logits nobody reads, are skipped. A sharded model's workers
        must all pass the same flags, since the head's gather is a collective call.
        """
        if all_logits and not logits:
            raise InvalidSettingError("all_logits asks for the logits that logits=False skips")
        ids = self._checked_ids(tokens, start_pos)
        wanted = []  # hidden states [n, dim] of the tokens whose logits are asked for
        for hidden in self._batches(ids, start_pos):  # [n, dim] each
            wanted = wanted + [hidden] if all_logits else [hidden[-1:]]
        if not logits:
            return None
        rows = self._vocab_logits(np.concatenate(wanted))  # [n, vocab]
        if not np.isfinite(rows).all():  # finite weights can still overflow when they are absurdly large
            raise InvalidModelError("the model computed NaN or infinite logits: its weights are corrupt")
        return rows if all_logits else rows[0]

    def final_hidden_states(self, tokens: Sequence[int]) -> np.ndarray:
        """The hidden states [len(tokens), dim] after the final norm (what the vocabulary head reads; the last
        of transformers' hidden_states) of `tokens` run from position 0: the source of embeddings. The cache
        is overwritten with them."""
        hidden = list(self._batches(self._checked_ids(tokens, 0), 0))  # [n, dim] each
        return self._final_norm(np.concatenate(hidden))  # [len(tokens), dim]

    def _batches(self, ids: np.ndarray, start_pos: int) -> Iterator[np.ndarray]:
        """Run ids [n] through the layers FORWARD_BATCH_TOKENS at a time from start_pos, replacing whatever the
        cache held from there on; yields each batch's hidden states [batch, dim] after the last layer."""
        del self.cache.ids[start_pos:]  # anything cached from here on is being replaced
        for begin in range(0, len(ids), FORWARD_BATCH_TOKENS):
            batch = ids[begin:begin + FORWARD_BATCH_TOKENS]
            hidden = self._run_layers(batch, start_pos + begin)  # [n, dim]
            self.cache.ids.extend(int(i) for i in batch)  # these positions now hold their keys and values
            yield hidden

    def _checked_ids(self, tokens: Sequence[int], start_pos: int) -> np.ndarray:
        """`tokens` as int64 ids [n] once they are known to fit the vocabulary and the context after start_pos."""
        n_tokens, end = len(tokens), start_pos + len(tokens)
        if n_tokens == 0:
            raise InvalidSettingError("forward needs at least one token")
        if end > self.config.context_length:
            raise ContextFullError("%d tokens do not fit the context of %d tokens (positions %d..%d)"
                                   % (end, self.config.context_length, start_pos, end - 1))
        if not 0 <= start_pos <= len(self.cache.ids):
            raise InvalidSettingError("start_pos %d would leave a gap: the cache holds %d positions"
                                      % (start_pos, len(self.cache.ids)))
        ids = np.asarray(tokens, dtype=np.int64)
        if ids.min() < 0 or ids.max() >= self.config.vocab_size:
            raise InvalidSettingError("token ids must lie in 0..%d" % (self.config.vocab_size - 1))
        return ids

    def _run_layers(self, ids: np.ndarray, start_pos: int) -> np.ndarray:
        """The hidden states [n, dim] after the last layer; keys and values go into the cache on the way."""
        cfg = self.config
        x = self.token_embedding.rows(ids) * np.float32(cfg.embed_scale)  # [n, dim]
        positions = np.arange(start_pos, start_pos + len(ids))
        ropes = {base: rope_angles(positions, inv_freq) for base, inv_freq in self.inv_freqs.items()}
        masks = {window: attention_mask(start_pos, len(ids), window) for window in set(self.layer_windows)}
        for i, w in enumerate(self.layers):
            h = rms_norm(x, w.attn_norm, cfg.rms_eps)
            h = self._attention(i, w, h, start_pos, ropes[self.layer_rope_bases[i]], masks[self.layer_windows[i]])
            self._sum(h)
            if w.post_attn_norm is not None:
                h = rms_norm(h, w.post_attn_norm, cfg.rms_eps)
            x = x + h  # residual
            h = rms_norm(x, w.ffn_norm, cfg.rms_eps)
            h = feed_forward(h, w, self.stacked[i], cfg.activation)
            self._sum(h)
            if w.post_ffn_norm is not None:
                h = rms_norm(h, w.post_ffn_norm, cfg.rms_eps)
            x = x + h  # residual
        return x

    def _vocab_logits(self, hidden: np.ndarray) -> np.ndarray:
        """Hidden states [n, dim] -> logits [n, vocab]: the final norm and the output head."""
        return self._gather(self.output.matmul(self._final_norm(hidden)))

    def _final_norm(self, hidden: np.ndarray) -> np.ndarray:
        return rms_norm(hidden, self.output_norm, self.config.rms_eps)  # [n, dim]

    def _sum(self, partial: np.ndarray) -> None:
        """A shard's partial product [n, dim] becomes the whole one (the same numbers in every worker)."""
        if self.collective is not None:
            self.collective.sum_(partial)

    def _gather(self, logits: np.ndarray) -> np.ndarray:
        """This worker's vocabulary columns [n, rows] of the logits -> all of them [n, vocab]."""
        if self.collective is None:
            return logits
        full = np.empty((logits.shape[0], self.config.vocab_size), dtype=np.float32)
        for row in range(logits.shape[0]):
            self.collective.gather(np.ascontiguousarray(logits[row]), full[row], self.shard.vocab[0])
        return full

    def _attention(self, layer: int, w: LayerWeights, x: np.ndarray, start_pos: int,
                   rope: Tuple[np.ndarray, np.ndarray], mask: Tuple[int, np.ndarray]) -> np.ndarray:
        cfg = self.config
        n, hd = x.shape[0], cfg.head_dim
        if not self.head_blocks:  # a worker beyond the query heads (tensor_parallel.py) adds nothing
            return np.zeros_like(x)  # [n, dim]
        q, k, v = qkv_products(x, w, self.stacked[layer])
        q = q.reshape(n, self.n_heads, hd)  # [n, n_heads, head_dim]
        k = k.reshape(n, self.n_kv_heads, hd)  # [n, n_kv, head_dim]
        v = v.reshape(n, self.n_kv_heads, hd)
        if w.q_norm is not None:
            q, k = rms_norm(q, w.q_norm, cfg.rms_eps), rms_norm(k, w.k_norm, cfg.rms_eps)
        # Scores scale by 1/sqrt(head_dim), as in llama.cpp; Gemma 3's query_pre_attn_scalar is the same 256.
        q = apply_rope(q, rope[0], rope[1], cfg.rope_style) * np.float32(hd ** -0.5)
        k = apply_rope(k, rope[0], rope[1], cfg.rope_style)
        self.cache.store(layer, start_pos, k, v)

        first, additive = mask
        keys = self.cache.keys(layer, first, start_pos + n)  # [n_kv, m, head_dim]
        values = self.cache.values(layer, first, start_pos + n)  # [n_kv, m, head_dim]
        outs = []
        for b in self.head_blocks:
            # Query head h of the block reads its KV head h // group: line the groups up behind their KV head.
            qb = q[:, b.first_head:b.first_head + b.n_kv * b.group]  # [n, n_kv * group, head_dim]
            qb = qb.reshape(n, b.n_kv, b.group, hd).transpose(1, 2, 0, 3).reshape(b.n_kv, b.group * n, hd)
            kv = slice(b.first_kv, b.first_kv + b.n_kv)
            scores = (qb @ keys[kv].transpose(0, 2, 1)).reshape(b.n_kv, b.group, n, -1) + additive  # [n_kv, group, n, m]
            probs = softmax(scores).reshape(b.n_kv, b.group * n, -1)  # [n_kv, group * n, m]
            out = (probs @ values[kv]).reshape(b.n_kv, b.group, n, hd)  # [n_kv, group, n, head_dim]
            outs.append(out.transpose(2, 0, 1, 3).reshape(n, b.n_kv * b.group * hd))  # [n, heads * head_dim]
        out = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=1)  # [n, n_heads * head_dim]
        return w.wo.matmul(out)  # [n, dim] (a shard's partial sum)
