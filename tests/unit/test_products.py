"""The browser's matrix products (einsum, cut into blocks under wasm32's iterator limit) against numpy's `@`:
natively both routes of pychat_wasm/model/products.py can be run, so the one Pyodide takes is checked here too."""
from __future__ import annotations

import numpy as np
import pytest

from pychat_wasm.model import products


@pytest.mark.parametrize("limit", [10 ** 9, 5000, 700, 1])
def test_einsum_matmul_in_blocks_equals_matmul(limit):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((13, 40))
    b = rng.standard_normal((40, 29))
    np.testing.assert_allclose(products.einsum_matmul(a, b, limit), a @ b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(products.einsum_matmul(a, np.ascontiguousarray(b.T), limit, b_transposed=True),
                               a @ b, rtol=1e-12, atol=1e-12)


def test_float32_inputs_give_float32_products_on_both_routes():
    x = np.ones((1, 8), np.float32)
    w = np.ones((3, 8), np.float32)
    assert products.matmul_transposed(x, w).dtype == np.float32
    assert products.einsum_matmul(x, w, 10 ** 9, b_transposed=True).dtype == np.float32


@pytest.mark.parametrize("rows", [2, 5, products.FEW_ROWS])
@pytest.mark.parametrize("band_bytes", [1, 8 * 40 * 3, products.BAND_BYTES])
def test_few_row_products_band_by_band_equal_matmul(rows, band_bytes):
    """A speculative draft's check (2..FEW_ROWS rows) goes band by band: bands of one row, of several with a
    shorter last one, and one band for the whole matrix all give numpy's `@`."""
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, 40))
    w = rng.standard_normal((29, 40))
    np.testing.assert_allclose(products.banded_matmul_transposed(x, w, band_bytes), x @ w.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(products.matmul_transposed(x, w), x @ w.T, rtol=1e-12, atol=1e-12)
