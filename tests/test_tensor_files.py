"""bfloat16 in safetensors files for NumPy (contract/tensor_files.py): bit-exact both ways, readable as BF16 by
safetensors' other readers, every other dtype safetensors' own, and broken headers named."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load as safetensors_load
from safetensors.numpy import save as safetensors_save

from contract import tensor_files


def _arrays():
    rng = np.random.default_rng(0)
    bf16 = rng.standard_normal((3, 5)).astype(ml_dtypes.bfloat16)
    return {"W": bf16, "x": rng.standard_normal((2, 3)).astype(np.float16), "h0": np.arange(6, dtype=np.float32),
            "lengths": np.array([3, 0], np.int64), "bits": np.array([0x7F80, 0xFFC1, 1], np.uint16).view(ml_dtypes.bfloat16)}


def test_bfloat16_round_trips_bit_for_bit_beside_other_dtypes():
    arrays = _arrays()
    back = tensor_files.load(tensor_files.save(arrays, {"case": "small"}))
    assert back.keys() == arrays.keys()
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape, name
        np.testing.assert_array_equal(back[name].view(np.uint8), array.view(np.uint8))  # inf and NaN payloads too


def test_the_file_says_bf16_and_safetensors_own_readers_read_it_as_bfloat16():
    torch = pytest.importorskip("torch", reason="needs torch: pip install 'lstm-conformance[torch]'")
    from safetensors.torch import load as torch_load

    arrays = _arrays()
    data = tensor_files.save(arrays)
    assert b'"dtype":"BF16"' in data
    read = torch_load(data)
    assert read["W"].dtype == torch.bfloat16
    np.testing.assert_array_equal(read["W"].view(torch.int16).numpy().view(np.uint16), arrays["W"].view(np.uint16))


def test_without_bfloat16_the_bytes_are_safetensors_own():
    arrays = {k: v for k, v in _arrays().items() if v.dtype.name != "bfloat16"}
    assert tensor_files.save(arrays) == safetensors_save(arrays)
    assert safetensors_load(tensor_files.save(arrays)).keys() == arrays.keys()


@pytest.mark.parametrize("data, message", [
    (b"\x01\x00", "shorter than its header's length"),
    (b"\xff\x00\x00\x00\x00\x00\x00\x00{}", "its header claims 255 bytes of 10"),
])
def test_a_broken_file_is_named_as_such(data, message):
    with pytest.raises(ValueError, match=message):
        tensor_files.load(data)
