"""The loss-curve PNG writer (pychat_wasm/cli/plot.py), decoded by an independent PNG reader (Pillow).

The chart is checked by where its colours land, not by its exact pixels: a zig-zag's curve must follow the data
(its pixel rows an affine function of the interpolated losses, within 3% of its height or 1.5 px), a falling curve must
show its colour near the top-left and the bottom-right of the plot area and none near the bottom-left, the title
must leave dark pixels at the top, and every edge case (no data, one point, NaN/inf, a flat curve) must still
give a PNG.
"""
from __future__ import annotations

import io
import math
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pychat_wasm.cli.plot import encode_png, loss_curve_png, nice_ticks

BLUE, RED = (31, 119, 180), (214, 39, 40)
AXIS = (90, 90, 90)  # the axis colour plot.py draws with


def decode(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG" and image.mode == "RGB"
    return np.asarray(image)


def falling_run(n: int = 300, seed: int = 0):
    rng = np.random.RandomState(seed)
    steps = np.arange(1, n + 1)
    train = 1.0 + 6.0 * np.exp(-steps / (n / 5.0)) + rng.normal(0, 0.2, n)
    val = [(int(s), 1.1 + 6.0 * np.exp(-s / (n / 5.0))) for s in np.linspace(n / 6, n, 6).astype(int)]
    return [("train", list(zip(steps.tolist(), train.tolist())), BLUE), ("validation", val, RED)]


def colour_mask(img: np.ndarray, rgb, tol: int = 40) -> np.ndarray:
    return np.abs(img.astype(int) - np.array(rgb)).sum(axis=2) <= tol


def plot_area(img: np.ndarray):
    """(top, bottom, left, right) of the axes: the column and the row with the most axis-coloured pixels."""
    axis = colour_mask(img, AXIS, 0)
    left, bottom = int(axis.sum(0).argmax()), int(axis.sum(1).argmax())
    top = int(np.nonzero(axis[:, left])[0].min())
    right = int(np.nonzero(axis[bottom])[0].max())
    return top, bottom, left, right


def region(img, box, fx0, fx1, fy0, fy1):
    top, bottom, left, right = box
    w, h = right - left, bottom - top
    return img[top + int(fy0 * h):top + int(fy1 * h), left + 1 + int(fx0 * w):left + int(fx1 * w)]


def test_falling_curve_lands_where_the_data_says():
    img = decode(loss_curve_png(falling_run(), "Loss: tiny-chat pretraining"))
    assert img.shape == (400, 640, 3)
    box = plot_area(img)
    top, bottom, left, right = box
    assert 20 < top < 80 and 300 < bottom < 390 and 20 < left < 100 and 560 < right < 640
    for rgb in (BLUE, RED):
        assert colour_mask(region(img, box, 0.75, 1.0, 0.7, 1.0), rgb).sum() >= 5, rgb  # low at the end
    assert colour_mask(region(img, box, 0.0, 0.15, 0.0, 0.3), BLUE).sum() >= 5  # train starts high
    assert colour_mask(region(img, box, 0.0, 0.15, 0.75, 1.0), BLUE).sum() == 0  # ... so not low at the start
    assert colour_mask(region(img, box, 0.0, 0.15, 0.0, 1.0), RED).sum() == 0  # first validation at 1/6
    # title: dark pixels in the band above the plot, centred
    title = img[:top - 12, 100:540]
    assert (title.max(axis=2) < 100).sum() > 200
    # tick labels left of the y axis and below the x axis
    assert (img[top:bottom, :left - 4].max(axis=2) < 100).sum() > 50
    assert (img[bottom + 6:, left:right].max(axis=2) < 100).sum() > 50


def test_legend_shows_each_label_colour_once_away_from_the_data():
    img = decode(loss_curve_png(falling_run(), "run"))
    box = plot_area(img)
    top_right = region(img, box, 0.6, 1.0, 0.0, 0.25)  # a falling curve leaves this corner to the legend
    assert colour_mask(top_right, BLUE, 0).sum() > 10 and colour_mask(top_right, RED, 0).sum() > 10


@pytest.mark.parametrize("size", [(640, 400), (120, 90), (1200, 300), (300, 800)])
def test_sizes(size):
    img = decode(loss_curve_png(falling_run(50), "sizes", *size))
    assert img.shape == (size[1], size[0], 3)
    assert colour_mask(img, BLUE).any() and colour_mask(img, RED).any()


@pytest.mark.parametrize("size", [(640, 400), (120, 90), (1200, 300), (300, 800)])
def test_curve_follows_the_data(size):
    """A zig-zag of 31 points (drawn as lines through markers, unsmoothed), without a legend: in every column
    of the curve the middle of its pixels is one affine function of the data linearly interpolated there,
    the step axis running from the first marker's centre to the last's and the loss axis pointing up."""
    steps = np.arange(0, 31) * 10
    losses = 1.0 + np.abs(steps % 100 - 50) / 50 + steps / 300  # kinks every 50 steps, rising overall
    img = decode(loss_curve_png([("", list(zip(steps.tolist(), losses.tolist())), BLUE)], "zig-zag", *size))
    assert img.shape == (size[1], size[0], 3)
    curve = colour_mask(img, BLUE, 60)
    columns = np.nonzero(curve.any(axis=0))[0]
    xs = np.arange(columns.min(), columns.max() + 1)
    assert curve[:, xs].any(axis=0).all()  # one unbroken curve
    rows = np.array([np.nonzero(curve[:, x])[0].mean() for x in xs])
    first, last = columns.min() + 3.5, columns.max() - 3.5  # the centres of the end markers (7 px wide)
    expected = np.interp(steps[0] + (xs - first) / (last - first) * (steps[-1] - steps[0]), steps, losses)
    (slope, offset), *_ = np.linalg.lstsq(np.stack([expected, np.ones(len(xs))], 1), rows, rcond=None)
    assert slope < 0  # a higher loss is drawn higher up
    height = -slope * np.ptp(losses)
    assert height > 0.5 * (size[1] - 80)  # the curve uses the plot's height
    assert np.abs(rows - (slope * expected + offset)).max() < max(0.03 * height, 1.5)  # 1.5 px on a tiny chart


def test_too_small_is_refused():
    with pytest.raises(ValueError):
        loss_curve_png([], "x", 60, 40)


@pytest.mark.parametrize("series", [
    [],
    [("train", [], BLUE)],
    [("train", [(0, float("nan")), (1, float("inf")), (2, -float("inf"))], BLUE)],
], ids=["no-series", "no-points", "only-non-finite"])
def test_empty_chart_has_a_note(series):
    img = decode(loss_curve_png(series, "empty"))
    assert img.shape == (400, 640, 3)
    assert not colour_mask(img, BLUE).any()
    top, bottom, left, right = plot_area(img)
    middle = img[(top + bottom) // 2 - 10:(top + bottom) // 2 + 10, (left + right) // 2 - 40:(left + right) // 2 + 40]
    assert (middle.max(axis=2) < 200).sum() > 20  # "no data"


def test_single_point_is_a_visible_marker():
    img = decode(loss_curve_png([("validation", [(7, 2.5)], RED)], "one point", 320, 240))
    top, bottom, left, right = plot_area(img)
    inside = img[top:bottom, left + 1:right + 1]
    ys, xs = np.nonzero(colour_mask(inside, RED, 0))
    assert len(ys) >= 9
    # the marker (not the legend sample) sits in the middle of the padded window around the point
    assert np.any((np.abs(xs - inside.shape[1] / 2) < 5) & (np.abs(ys - inside.shape[0] / 2) < 5))


def test_non_finite_points_are_skipped():
    points = [(s, 5.0 - s / 100) for s in range(200)]
    points[50], points[120] = (50, float("nan")), (120, float("inf"))
    points.append((float("nan"), 1.0))
    img = decode(loss_curve_png([("train", points, BLUE)], "gaps"))
    box = plot_area(img)
    assert colour_mask(region(img, box, 0.0, 0.1, 0.0, 0.2), BLUE).any()
    assert colour_mask(region(img, box, 0.9, 1.0, 0.8, 1.0), BLUE).any()


def test_flat_curve_is_a_horizontal_line_in_the_middle():
    img = decode(loss_curve_png([("train", [(s, 2.0) for s in range(100)], BLUE)], "flat"))
    top, bottom, left, right = plot_area(img)
    rows = np.nonzero(colour_mask(img[:, left + 1:right - 100], BLUE, 0).any(axis=1))[0]  # skip the legend
    assert len(rows) and abs(rows.mean() - (top + bottom) / 2) < 5 and rows.max() - rows.min() <= 3


def test_odd_inputs():
    rng = np.random.RandomState(1)
    tiny = np.stack([np.arange(0, 2000001, 1000), 3e-5 + rng.rand(2001) * 1e-5], 1)  # numpy points, huge steps
    negative = [(s, -0.5 + s * 1e-6) for s in range(0, 2000001, 250000)]
    png = loss_curve_png([("tiny", tiny, np.array(BLUE)), ("negative", negative, RED), ("", [(1, 2)], (0, 0, 0))],
                         "Unicode \u00e9 and a title far too long to fit at twice the size " * 3, 480, 300)
    img = decode(png)
    assert img.shape == (300, 480, 3)
    assert colour_mask(img, BLUE).any() and colour_mask(img, RED).any()  # both series drawn


def test_nice_ticks():
    for lo, hi, target in [(0.6, 7.6, 7), (0, 1, 5), (-0.5, 2.0, 6), (3e-5, 5e-5, 4), (0, 2e6, 5), (99.5, 100.5, 4)]:
        ticks, step = nice_ticks(lo, hi, target)
        mantissa = step / 10 ** math.floor(math.log10(step) + 1e-9)
        assert any(abs(mantissa - m) < 1e-9 for m in (1, 2, 5)), step
        assert ticks and all(lo - 1e-12 <= t <= hi + 1e-12 for t in ticks)
        assert all(abs(t / step - round(t / step)) < 1e-6 for t in ticks)
        assert (hi - lo) / target / 2.5 <= step <= (hi - lo) / target * 2.5
    assert nice_ticks(6.3, 7.7, 6, integer=True)[0] == [7.0]


def test_png_structure():
    """IHDR, one IDAT whose rows all use filter 0, IEND; every CRC right; pixels round-trip exactly."""
    img = np.random.RandomState(0).randint(0, 256, (7, 5, 3)).astype(np.uint8)
    png = encode_png(img)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(png):
        (length,), tag = struct.unpack(">I", png[pos:pos + 4]), png[pos + 4:pos + 8]
        data = png[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", png[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(tag + data) & 0xFFFFFFFF
        chunks.append((tag, data))
        pos += 12 + length
    assert [t for t, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    assert struct.unpack(">IIBBBBB", chunks[0][1]) == (5, 7, 8, 2, 0, 0, 0)
    raw = np.frombuffer(zlib.decompress(chunks[1][1]), np.uint8).reshape(7, 1 + 5 * 3)
    assert not raw[:, 0].any()
    assert np.array_equal(raw[:, 1:].reshape(7, 5, 3), img)
    assert np.array_equal(decode(png), img)
