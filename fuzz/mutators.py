"""Mutations of a GGUF file, each aimed at a structure its reader must not trust.

Every mutator takes (rng, data, layout, donors) and returns new bytes; `mutate` picks one to three of them.
`layout` is the seed file's map (gguf_layout.scan), `donors` the layouts and bytes of the other seeds, for
splicing. Header edits that keep the file well-formed re-pad the header, so the tensor data stays where
its offsets say: the mutation then tests one lie at a time.
"""
from __future__ import annotations

import random
import struct
from typing import Callable, Dict, List, Sequence, Tuple

from .gguf_layout import ARRAY, Layout, encode_string_kv
from .template_bombs import generate_template

BOUNDARY_INTS = [0, 1, 2, 3, 7, 8, 15, 16, 31, 32, 63, 64, 127, 128, 255, 256, 1023, 4096, 65535, 65536,
                 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 48, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1]
SPECIAL_FLOATS = [float("nan"), float("inf"), float("-inf"), 0.0, -0.0, -1.0, 1e-45, 3.4e38, 1e30, -1e30]

# Chat templates a hostile file may carry: escapes, bombs, errors; they must fail typed and bounded.
HOSTILE_TEMPLATES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__['__builtins__'] }}",
    "{{ self.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{% for i in range(10**9) %}x{% endfor %}",
    "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
    "{{ 'x' * 10**9 }}",
    "{{ 9 ** (9 ** 9) }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    "{% set ns = namespace(n=3) %}{% for i in range(64) %}{% set ns.n = ns.n * ns.n %}{% endfor %}{{ ns.n }}",
    "{{ 'x'.center(10**9) }}", "{{ 'x'|indent(10**8) }}", "{{ '%0999999999d' % 1 }}", "{{ '{:>999999999}'.format(1) }}",
    "{{ (['x' * 99999] * 99999)|join }}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{{ messages.append(1) }}", "{{ raise_exception('no') }}", "{% for m in messages %}{{ m.content",
    "{{ messages[0]['content'] ~ nothing.attribute.deeper }}", "{{ strftime_now('%Y' * 10**7) }}",
    "{% for m in messages %}{{ m['content'] | tojson(indent=10**8) }}{% endfor %}",
]
TEXTS = ["Hi", "Hello world! How are you?", "<|im_start|>user\nx<|im_end|>", "<start_of_turn>model\n",
         "\u00e9\u4e2d\U0001F600", "\x00\x01\ufffd", "  \t\n\n  ", "a" * 300]

Mutator = Callable[[random.Random, bytes, Layout, Sequence[Tuple[bytes, Layout]]], bytes]


def _put(data: bytes, offset: int, raw: bytes) -> bytes:
    return data[:offset] + raw + data[offset + len(raw):]


def _pick_field(rng: random.Random, layout: Layout, kinds: Sequence[str]):
    kinds = [k for k in kinds if layout.fields.get(k)]
    return rng.choice(layout.fields[rng.choice(kinds)]) if kinds else None


def bit_flips(rng, data, layout, donors):
    """Flip 1 to 8 bits, mostly in the header (all of it for tiny files)."""
    out = bytearray(data)
    header = layout.data_offset if rng.random() < 0.8 else len(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(max(header, 1))] ^= 1 << rng.randrange(8)
    return bytes(out)


def boundary_integer(rng, data, layout, donors):
    """Overwrite a count, length, dimension, offset, type or value with a boundary integer."""
    field = _pick_field(rng, layout, ("count", "length", "dim", "offset", "type", "scalar", "version"))
    if field is None:
        return data
    if field.fmt in ("<f", "<d"):
        return _put(data, field.offset, struct.pack(field.fmt, rng.choice(SPECIAL_FLOATS)))
    (old,) = struct.unpack_from(field.fmt, data, field.offset)
    value = rng.choice(BOUNDARY_INTS + [old + 1, old - 1, old * 2, old // 2, len(data), len(data) - layout.data_offset])
    bits = 8 * field.width
    value %= 2 ** bits
    fmt = "<" + {1: "B", 2: "H", 4: "I", 8: "Q"}[field.width]
    return _put(data, field.offset, struct.pack(fmt, value))


def truncate(rng, data, layout, donors):
    """Cut the file at a structure boundary (or one byte either side), or anywhere."""
    if rng.random() < 0.8:
        cut = rng.choice(layout.boundaries) + rng.choice((-1, 0, 0, 1))
    else:
        cut = rng.randrange(len(data) + 1)
    return data[:max(0, min(cut, len(data)))]


def _rebuild(data: bytes, layout: Layout, header: bytes) -> bytes:
    """A new header (counts already fixed) followed by the original tensor data, re-padded to 32."""
    pad = -len(header) % 32
    return header + b"\0" * pad + data[layout.data_offset:]


def _set_count(header: bytes, offset: int, delta: int) -> bytes:
    (n,) = struct.unpack_from("<Q", header, offset)
    return _put(header, offset, struct.pack("<Q", (n + delta) % 2 ** 64))


def _edit_sections(rng, data, layout, sections, count_offset, donor_sections):
    """Delete, duplicate, swap or splice (from another seed) one kv pair or tensor info."""
    if not sections:
        return data
    header_end = max(s.stop for s in (layout.tensor_infos or layout.kv_pairs))
    header = data[:header_end]
    i = rng.randrange(len(sections))
    s = sections[i]
    action = rng.choice(("delete", "duplicate", "swap", "splice"))
    fix_count = rng.random() < 0.9
    if action == "delete":
        header = header[:s.start] + header[s.stop:]
        delta = -1
    elif action == "duplicate":
        header = header[:s.stop] + header[s.start:s.stop] + header[s.stop:]
        delta = 1
    elif action == "swap" and len(sections) > 1:
        t = sections[rng.randrange(len(sections))]
        a, b = sorted((s, t))
        header = header[:a.start] + header[b.start:b.stop] + header[a.stop:b.start] + header[a.start:a.stop] + \
            header[b.stop:]
        delta = 0
    else:
        donor_bytes, donor_sections_list = donor_sections
        if not donor_sections_list:
            return data
        d = rng.choice(donor_sections_list)
        header = header[:s.start] + donor_bytes[d.start:d.stop] + header[s.stop:]
        delta = 0
    if fix_count and delta:
        header = _set_count(header, count_offset, delta)
    return _rebuild(data, layout, header)


def splice_kv(rng, data, layout, donors):
    donor_bytes, donor_layout = rng.choice(donors) if donors else (data, layout)
    return _edit_sections(rng, data, layout, layout.kv_pairs, 16, (donor_bytes, donor_layout.kv_pairs))


def splice_tensor_info(rng, data, layout, donors):
    donor_bytes, donor_layout = rng.choice(donors) if donors else (data, layout)
    return _edit_sections(rng, data, layout, layout.tensor_infos, 8, (donor_bytes, donor_layout.tensor_infos))


def _with_kv(data: bytes, layout: Layout, kv: bytes, replacing: str) -> bytes:
    """The file with the pair `kv` in place of the key `replacing` (or added after the last pair)."""
    header_end = max(s.stop for s in (layout.tensor_infos or layout.kv_pairs))
    header = data[:header_end]
    existing = [s for s in layout.kv_pairs if s.name == replacing]
    if existing:
        s = existing[0]
        header = header[:s.start] + kv + header[s.stop:]
    else:
        at = layout.kv_pairs[-1].stop if layout.kv_pairs else 24
        header = _set_count(header[:at] + kv + header[at:], 16, 1)
    return _rebuild(data, layout, header)


def replace_template(rng, data, layout, donors):
    """Give the file a hostile, generated (template_bombs.py) or randomly damaged chat template."""
    roll = rng.random()
    if roll < 0.4:
        text = rng.choice(HOSTILE_TEMPLATES)
    elif roll < 0.7:
        text = generate_template(rng)
    else:
        base = rng.choice(HOSTILE_TEMPLATES + ["{% for m in messages %}{{ m['role'] + m['content'] }}{% endfor %}"])
        chars = list(base)
        for _ in range(rng.randint(1, 4)):
            chars[rng.randrange(len(chars))] = rng.choice("{}%()[]'\".|~*-+ _xn0123456789")
        text = "".join(chars)
    return _with_kv(data, layout, encode_string_kv("tokenizer.chat_template", text), "tokenizer.chat_template")


def _key(name: str) -> bytes:
    raw = name.encode()
    return struct.pack("<Q", len(raw)) + raw


def nested_array(rng, data, layout, donors):
    """A metadata array of arrays, 1 to 5,000 deep (llama.cpp refuses any), in place of a key or added."""
    depth = rng.choice((1, 2, 3, 64, 1000, 5000))
    inner = struct.pack("<IQ", 4, 2) + struct.pack("<II", 7, 8)  # two u32
    value = struct.pack("<IQ", ARRAY, rng.choice((1, 2))) * depth + inner
    name = rng.choice([s.name for s in layout.kv_pairs] + ["x.nested"])
    return _with_kv(data, layout, _key(name) + struct.pack("<I", ARRAY) + value, name)


def huge_array(rng, data, layout, donors):
    """A numeric metadata array of about a million elements (just below, at and above the reader's list
    limit), as a tokenizer key or a new one."""
    element_type, width = rng.choice(((0, 1), (4, 4), (6, 4), (10, 8)))
    count = rng.choice((2 ** 20 - 1, 2 ** 20, 2 ** 20 + 1, 3 * 2 ** 20 // width))
    name = rng.choice(("tokenizer.ggml.scores", "tokenizer.ggml.token_type", "x.huge"))
    kv = _key(name) + struct.pack("<IIQ", ARRAY, element_type, count) + bytes([rng.randrange(256)]) * (count * width)
    return _with_kv(data, layout, kv, name)


def duplicate_name(rng, data, layout, donors):
    """Rename a metadata key or a tensor to another one's name (the file is otherwise unchanged)."""
    sections = layout.kv_pairs if rng.random() < 0.5 or len(layout.tensor_infos) < 2 else layout.tensor_infos
    if len(sections) < 2:
        return data
    target, source = rng.sample(sections, 2)
    header_end = max(s.stop for s in (layout.tensor_infos or layout.kv_pairs))
    renamed = _key(source.name) + data[target.start + 8 + len(target.name.encode()):target.stop]
    header = data[:target.start] + renamed + data[target.stop:header_end]
    return _rebuild(data, layout, header)


def overlap_tensors(rng, data, layout, donors):
    """Point one tensor's data offset into another's (the same start, or one alignment step into it)."""
    offsets = layout.fields.get("offset", [])
    if len(offsets) < 2:
        return data
    target, source = rng.sample(offsets, 2)
    (value,) = struct.unpack_from("<Q", data, source.offset)
    return _put(data, target.offset, struct.pack("<Q", value + rng.choice((0, 0, 32))))


def corrupt_tensor_data(rng, data, layout, donors):
    """NaN, infinity or random bytes inside a tensor's data (a float16 scale is often the first bytes)."""
    tensors = [t for t in layout.tensor_data if t.stop <= len(data) and t.stop > t.start]
    if not tensors:
        return data
    t = rng.choice(tensors)
    at = rng.randrange(t.start, t.stop - 1)
    raw = rng.choice([b"\x00\x7e", b"\x00\x7c", b"\x00\xfc", b"\x00\x00\xc0\x7f", b"\xff\xff\x7f\x7f",
                      bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))])
    return _put(data, at, raw[:t.stop - at])


def overwrite_bytes(rng, data, layout, donors):
    """A run of random bytes, or a copy of another region, anywhere in the header."""
    at = rng.randrange(max(layout.data_offset, 1))
    if rng.random() < 0.5:
        raw = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    else:
        src = rng.randrange(max(layout.data_offset, 1))
        raw = data[src:src + rng.randint(1, 64)]
    return _put(data, at, raw[:len(data) - at])


MUTATORS: Dict[str, Mutator] = {
    "bit_flips": bit_flips, "boundary_integer": boundary_integer, "truncate": truncate,
    "splice_kv": splice_kv, "splice_tensor_info": splice_tensor_info, "replace_template": replace_template,
    "corrupt_tensor_data": corrupt_tensor_data, "overwrite_bytes": overwrite_bytes,
    "nested_array": nested_array, "huge_array": huge_array, "duplicate_name": duplicate_name,
    "overlap_tensors": overlap_tensors,
}
WEIGHTS = {"bit_flips": 3, "boundary_integer": 6, "truncate": 2, "splice_kv": 2, "splice_tensor_info": 2,
           "replace_template": 2, "corrupt_tensor_data": 2, "overwrite_bytes": 1, "nested_array": 1,
           "huge_array": 1, "duplicate_name": 1, "overlap_tensors": 1}


def mutate(rng: random.Random, data: bytes, layout: Layout,
           donors: Sequence[Tuple[bytes, Layout]]) -> Tuple[bytes, List[str]]:
    """One to three mutations in a row (the later ones aim with the seed's map, which may now be off)."""
    names = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()), k=rng.choice((1, 1, 1, 2, 3)))
    for name in names:
        try:
            data = MUTATORS[name](rng, data, layout, donors)
        except (struct.error, IndexError, ValueError):  # the map no longer fits an earlier mutation's result
            pass
    return data, names
