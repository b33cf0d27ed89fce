r"""Loss curves as PNG images, drawn with numpy alone (no plotting or imaging library, so it runs in Pyodide).

loss_curve_png() draws on a uint8 RGB canvas: 1/2/5 x 10^k ticks, an embedded 5x7 bitmap font, anti-aliased
lines (dense, noisy series thin and tinted with a moving average over them; sparse ones with markers), a legend
in the emptiest corner, and a PNG encoded by hand with zlib + struct.

    >>> png = loss_curve_png([("train", [(0, 3.0), (1, 2.5), (2, 2.0)], (31, 119, 180))], "demo", 200, 150)
    >>> png[:8] == b"\x89PNG\r\n\x1a\n", struct.unpack(">II", png[16:24])
    (True, (200, 150))
"""
from __future__ import annotations

import math
import struct
import zlib
from typing import List, Sequence, Tuple

import numpy as np

RGB = Tuple[int, int, int]
Series = Tuple[str, Sequence[Tuple[float, float]], RGB]

# 5x7 glyphs (8 rows with the descender), one hex byte per row, bit 4 = leftmost column; missing rows are blank.
_CHARS = " 0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.,-:+=()[]/%_?!'*#"
_FONT_HEX = """
00 0e11131519110e 040c040404040e 0e11010204081f 1f02040201110e 02060a121f0202 1f101e0101110e 0608101e11110e
1f010204080808 0e11110e11110e 0e11110f01020c 0e11111f111111 1e11111e11111e 0e11101010110e 1c12111111121c
1f10101e10101f 1f10101e101010 0e11101711110f 1111111f111111 0e04040404040e 0702020202120c 11121418141211
1010101010101f 111b1515111111 11111915131111 0e11111111110e 1e11111e101010 0e11111115120d 1e11111e141211
0f10100e01011e 1f040404040404 1111111111110e 11111111110a04 1111111515150a 11110a040a1111 11110a04040404
1f01020408101f 00000e010f110f 1010161911111e 00000e1010110e 01010d1311110f 00000e111f100e 0609081c080808
00000f11110f010e 10101619111111 04000c0404040e 020006020202120c 10101214181412 0c04040404040e 00001a15151111
00001619111111 00000e1111110e 00001e11111e1010 00000f11110f0101 00001619101010 00000e100e011e 08081c08080906
0000111111130d 00001111110a04 0000111115150a 0000110a040a11 00001111110f010e 00001f0204081f 00000000000c0c
000000000c0408 0000001f 000c0c000c0c 0004041f0404 00001f001f 02040808080402 08040202020408 0e08080808080e
0e02020202020e 000102040810 18190204081303 0000000000001f 0e110102040004 04040404040004 040408 0004150e1504
0a0a1f0a1f0a0a"""
_FONT = {ch: (np.array(list(bytes.fromhex(code).ljust(8, b"\0")), np.uint8)[:, None] >> np.arange(4, -1, -1)) & 1
         for ch, code in zip(_CHARS, _FONT_HEX.split())}  # type: Dict[str, np.ndarray]

INK, GRID, AXIS, NOTE = (40, 40, 40), (232, 232, 232), (90, 90, 90), (150, 150, 150)
DENSE = 40  # series with more points than this are drawn thin, with a moving average over them


def _text_width(text: str, scale: int = 1) -> int:
    return max(0, len(text) * 6 * scale - scale)


def _draw_text(img: np.ndarray, x: int, y: int, text: str, rgb: RGB, scale: int = 1) -> None:
    """Write text with its top-left corner at (x, y); characters the font lacks print as '?'; clipped to img."""
    h, w = img.shape[:2]
    for i, ch in enumerate(text):
        glyph = _FONT.get(ch, _FONT["?"]).repeat(scale, 0).repeat(scale, 1)
        ys, xs = np.nonzero(glyph)
        ys, xs = ys + y, xs + x + i * 6 * scale
        keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        img[ys[keep], xs[keep]] = rgb


def _stroke(alpha: np.ndarray, pts: np.ndarray, width: float) -> None:
    """Max-composite the anti-aliased polyline pts (n x 2 pixel x, y; one point = a dot) into the alpha layer."""
    (h, w), r = alpha.shape, width / 2.0
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]) if len(pts) > 1 else [(pts[0], pts[0])]:
        xa, xb = max(0, int(math.floor(min(x0, x1) - r - 1))), min(w - 1, int(math.ceil(max(x0, x1) + r + 1)))
        ya, yb = max(0, int(math.floor(min(y0, y1) - r - 1))), min(h - 1, int(math.ceil(max(y0, y1) + r + 1)))
        if xa > xb or ya > yb:
            continue
        yy, xx = np.mgrid[ya:yb + 1, xa:xb + 1].astype(np.float64)
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / (dx * dx + dy * dy), 0, 1) if dx or dy else 0.0
        cover = np.clip(r + 0.5 - np.hypot(xx - x0 - t * dx, yy - y0 - t * dy), 0, 1)
        np.maximum(alpha[ya:yb + 1, xa:xb + 1], cover, out=alpha[ya:yb + 1, xa:xb + 1])


def _paint(view: np.ndarray, pts: np.ndarray, rgb: RGB, width: float, marker: float = 0.0) -> np.ndarray:
    """Draw a line (and dots of diameter `marker` at its points) onto the view; return the coverage drawn."""
    alpha = np.zeros(view.shape[:2])
    if len(pts) > 1 and width > 0:
        _stroke(alpha, pts, width)
    for p in pts if marker else ():
        _stroke(alpha, p[None], marker)
    view[...] = (view * (1 - alpha[:, :, None]) + np.array(rgb, np.float64) * alpha[:, :, None] + 0.5).astype(np.uint8)
    return alpha


def nice_ticks(lo: float, hi: float, target: int, integer: bool = False) -> Tuple[List[float], float]:
    """Tick values in [lo, hi] at the step of 1, 2 or 5 x 10^k nearest to `target` intervals; and the step."""
    raw = (hi - lo) / max(1, target)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10)), key=lambda m: abs(math.log(m / raw)))
    step = max(step, 1.0) if integer else step
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [k * step + 0.0 for k in range(first, last + 1)], step


def _labels(ticks: List[float], step: float) -> List[str]:
    """Fixed-point labels with just enough decimals for the step; %g (1e+06, 2.5e-05) for huge or tiny ranges."""
    if max([abs(v) for v in ticks] + [step]) >= 1e6 or step < 1e-4:
        return ["%g" % float("%.3g" % v) for v in ticks]
    return ["%.*f" % (max(0, -int(math.floor(math.log10(step) + 1e-9))), v) for v in ticks]


def _span(values: List[float], pad: float, least: float) -> Tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi - lo <= 1e-12 * max(1.0, abs(lo)):  # one value: open a window around it instead of dividing by zero
        lo, hi = lo - max(abs(lo) * 0.1, least), hi + max(abs(hi) * 0.1, least)
    return lo - (hi - lo) * pad, hi + (hi - lo) * pad


def _smooth(y: np.ndarray) -> np.ndarray:
    """Centred moving average over about n/25 points, the window shrinking symmetrically at the ends (no lag)."""
    n, half, i = len(y), max(1, len(y) // 50), np.arange(len(y))
    c = np.concatenate([[0.0], np.cumsum(y)])
    hw = np.minimum(half, np.minimum(i, n - 1 - i))
    return (c[i + hw + 1] - c[i - hw]) / (2 * hw + 1)


def encode_png(img: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of the h x w x 3 uint8 array: IHDR, one IDAT (filter 0 on every row), IEND."""
    h, w = img.shape[:2]
    raw = np.concatenate([np.zeros((h, 1), np.uint8), np.ascontiguousarray(img, np.uint8).reshape(h, w * 3)], 1)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 9)) + chunk(b"IEND", b""))


def loss_curve_png(series: Sequence[Series], title: str, width: int = 640, height: int = 400) -> bytes:
    """A PNG of loss against step for each (label, [(step, loss), ...], (r, g, b)); non-finite points are skipped."""
    if width < 120 or height < 90:
        raise ValueError("a loss curve needs at least 120 x 90 pixels, not %d x %d" % (width, height))
    img = np.full((height, width, 3), 255, np.uint8)
    clean = []  # type: List[Tuple[str, np.ndarray, RGB]]
    for label, points, rgb in series:
        p = np.array([(float(s), float(v)) for s, v in points], np.float64).reshape(-1, 2)
        clean.append((str(label), p[np.isfinite(p).all(1)], tuple(int(c) for c in rgb)))
    drawn = [s for s in clean if len(s[1])]
    steps = [v for _, p, _ in drawn for v in p[:, 0]] or [0.0, 1.0]
    losses = [v for _, p, _ in drawn for v in p[:, 1]] or [0.0, 1.0]
    x_lo, x_hi = _span(steps, 0.02, 1.0)
    y_lo, y_hi = _span(losses, 0.06, 0.5)

    scale = 2 if _text_width(title, 2) <= width - 16 else 1
    title = title if _text_width(title, scale) <= width - 16 else title[:(width - 16) // 6 - 3] + "..."
    _draw_text(img, (width - _text_width(title, scale)) // 2, 8, title, INK, scale)
    top, bottom = (42 if title else 24), height - 38
    y_ticks, y_step = nice_ticks(y_lo, y_hi, max(2, (bottom - top) // 45))
    y_labels = _labels(y_ticks, y_step)
    left = 14 + max([_text_width(s) for s in y_labels] + [_text_width("loss")])
    x_ticks, x_step = nice_ticks(x_lo, x_hi, max(2, (width - left - 20) // 80), all(v % 1 == 0 for v in steps))
    x_labels = _labels(x_ticks, x_step)
    right = width - max(16, _text_width(x_labels[-1]) // 2 + 6 if x_labels else 16)

    sx, sy = (right - left) / (x_hi - x_lo), (bottom - top) / (y_hi - y_lo)  # image pixels per step, per loss

    for v, s in zip(y_ticks, y_labels):
        y = int(round(top + (y_hi - v) * sy))
        img[y, left + 1:right + 1], img[y, left - 4:left] = GRID, AXIS
        _draw_text(img, left - 7 - _text_width(s), y - 3, s, INK)
    for v, s in zip(x_ticks, x_labels):
        x = int(round(left + (v - x_lo) * sx))
        img[top:bottom, x], img[bottom + 1:bottom + 5, x] = GRID, AXIS
        _draw_text(img, x - _text_width(s) // 2, bottom + 8, s, INK)
    img[top:bottom + 1, left], img[bottom, left:right + 1] = AXIS, AXIS
    _draw_text(img, left - _text_width("loss") // 2, top - 13, "loss", INK)
    _draw_text(img, (left + right - _text_width("step")) // 2, bottom + 22, "step", INK)

    view = img[top:bottom, left + 1:right + 1]  # inside the axes, so lines never cover them

    def to_px(p: np.ndarray) -> np.ndarray:  # (step, loss) rows -> view (x, y)
        return np.stack([(p[:, 0] - x_lo) * sx - 1, (y_hi - p[:, 1]) * sy], 1)
    ink = np.zeros(view.shape[:2])
    for _, p, rgb in drawn:  # the noisy raw lines first, underneath everything
        if len(p) > DENSE:
            ink += _paint(view, to_px(p), tuple(int(255 - (255 - c) * 0.35) for c in rgb), 1.0)
    for _, p, rgb in drawn:
        if len(p) > DENSE:
            ink += _paint(view, to_px(np.stack([p[:, 0], _smooth(p[:, 1])], 1)), rgb, 2.0)
        else:
            ink += _paint(view, to_px(p), rgb, 2.0, 7.0)
    if not drawn:
        _draw_text(view, (view.shape[1] - _text_width("no data")) // 2, view.shape[0] // 2 - 3, "no data", NOTE)
        return encode_png(img)

    entries = [(label, rgb, len(p) <= DENSE) for label, p, rgb in drawn if label]
    lw, lh = 40 + max([_text_width(e[0]) for e in entries] + [0]), 8 + 14 * len(entries)
    vh, vw = ink.shape
    if entries and lw + 16 < vw and lh + 16 < vh:  # the legend goes in the corner with the least ink under it
        corners = [(8, vw - lw - 8), (vh - lh - 8, vw - lw - 8), (8, 8), (vh - lh - 8, 8)]
        ly, lx = min(corners, key=lambda c: round(ink[c[0]:c[0] + lh, c[1]:c[1] + lw].sum()))
        box = view[ly:ly + lh, lx:lx + lw]
        box[...] = 255
        box[0, :], box[-1, :], box[:, 0], box[:, -1] = GRID, GRID, GRID, GRID
        for i, (label, rgb, dots) in enumerate(entries):
            cy = 10 + 14 * i
            _paint(box, np.array([[7.0, cy], [27.0, cy]]), rgb, 2.0)
            _paint(box, np.array([[17.0, cy]]), rgb, 0.0, 7.0 * dots)
            _draw_text(box, 34, cy - 3, label, INK)
    return encode_png(img)
