"""The shared weight file: round trips, metadata, and every way a file can be wrong."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

from spec import LSTMParams, WeightFileError, load_weights, save_weights
from spec.cases import case_by_name, make_case_data
from spec.weights_file import metadata_for

PEEPHOLE = make_case_data(case_by_name("I-ne-H-peephole")).params  # I=7, H=2
STANDARD = make_case_data(case_by_name("small")).params  # I=5, H=4


@pytest.mark.parametrize("params", [PEEPHOLE, STANDARD, PEEPHOLE.astype(np.float32)], ids=["peephole", "standard", "float32"])
def test_round_trip_is_exact(params, tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, params)
    loaded = load_weights(path)
    assert loaded.variant == params.variant and loaded.dtype == params.dtype
    assert loaded.tensors().keys() == params.tensors().keys()
    for name, tensor in params.tensors().items():
        assert np.array_equal(loaded.tensors()[name], tensor), name


def test_metadata_describes_the_file(tmp_path):
    from safetensors import safe_open

    path = tmp_path / "w.safetensors"
    save_weights(path, PEEPHOLE)
    with safe_open(str(path), framework="np") as handle:
        meta = handle.metadata()
    assert meta == {
        "format": "lstm-conformance-weights",
        "format_version": "1",
        "gate_order": "i,f,g,o",
        "peephole_gate_order": "i,f,o",
        "variant": "peephole",
        "input_size": "7",
        "hidden_size": "2",
    }


def write(path, tensors, metadata):
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def expect_rejection(path, tensor, *fragments):
    with pytest.raises(WeightFileError) as info:
        load_weights(path)
    error = info.value
    assert error.tensor == tensor, f"error names {error.tensor!r}, expected {tensor!r}: {error}"
    assert str(path) in str(error)
    for fragment in fragments:
        assert fragment in str(error), f"{fragment!r} missing from: {error}"


GOOD_META = metadata_for(PEEPHOLE)
GOOD = PEEPHOLE.tensors()


@pytest.mark.parametrize(
    "tensors, meta_change, tensor, fragments",
    [
        ({k: v for k, v in GOOD.items() if k != "U"}, {}, "U", ("missing tensor",)),
        ({k: v for k, v in GOOD.items() if k != "p"}, {}, "p", ("missing tensor",)),
        ({**GOOD, "bias_hh": GOOD["b"]}, {}, "bias_hh", ("unexpected tensor",)),
        (GOOD, {"variant": "standard"}, "p", ("unexpected tensor",)),
        ({**GOOD, "U": GOOD["U"][:, :, :1]}, {}, "U", ("wrong shape", "expected (4, 2, 2)", "got (4, 2, 1)")),
        ({**GOOD, "W": GOOD["W"].transpose(0, 2, 1)}, {}, "W", ("wrong shape", "(4, 2, 7)", "(4, 7, 2)")),
        (GOOD, {"hidden_size": "3"}, "W", ("wrong shape", "expected (4, 3, 7)", "got (4, 2, 7)")),
        (GOOD, {"input_size": "6"}, "W", ("wrong shape", "(4, 2, 6)")),
        ({**GOOD, "b": GOOD["b"].astype(np.float32)}, {}, "b", ("dtype differs", "F64", "F32")),
        ({k: v.astype(np.float16) for k, v in GOOD.items()}, {}, "W", ("unsupported dtype", "F16")),
        ({k: (v * 100).astype(np.int32) for k, v in GOOD.items()}, {}, "W", ("unsupported dtype", "I32")),
        ({**GOOD, "p": np.array([[1.0, np.inf], [0, 0], [0, 0]])}, {}, "p", ("non-finite", "inf", "(0, 1)")),
        ({**GOOD, "W": np.where(GOOD["W"] > 0, np.nan, GOOD["W"])}, {}, "W", ("non-finite", "nan")),
        (GOOD, {"format": "something-else"}, "metadata 'format'", ("lstm-conformance-weights", "something-else")),
        (GOOD, {"format_version": "2"}, "metadata 'format_version'", ("'1'", "'2'")),
        (GOOD, {"gate_order": "i,o,f,g"}, "metadata 'gate_order'", ("'i,f,g,o'", "'i,o,f,g'")),
        (GOOD, {"peephole_gate_order": "i,o,f"}, "metadata 'peephole_gate_order'", ("'i,f,o'", "'i,o,f'")),
        (GOOD, {"variant": "coupled"}, "metadata 'variant'", ("'coupled'",)),
        (GOOD, {"hidden_size": "two"}, "metadata 'hidden_size'", ("a positive integer", "'two'")),
        (GOOD, {"input_size": "0"}, "metadata 'input_size'", ("a positive integer",)),
    ],
    ids=[
        "missing-U", "missing-p", "unexpected-tensor", "p-in-standard-file", "U-shape", "W-transposed",
        "hidden-size-inconsistent", "input-size-inconsistent", "mixed-dtypes", "float16", "int32",
        "inf", "nan", "format", "format-version", "gate-order", "peephole-gate-order", "variant",
        "hidden-size-not-a-number", "input-size-zero",
    ],
)
def test_rejects(tensors, meta_change, tensor, fragments, tmp_path):
    path = write(tmp_path / "bad.safetensors", tensors, {**GOOD_META, **meta_change})
    expect_rejection(path, tensor, *fragments)


def test_rejects_a_file_without_metadata(tmp_path):
    path = write(tmp_path / "bare.safetensors", GOOD, None)
    expect_rejection(path, "metadata 'format'", "None")


def test_rejects_a_missing_file(tmp_path):
    expect_rejection(tmp_path / "nowhere.safetensors", "file", "no such file")


def test_rejects_a_truncated_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, PEEPHOLE)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 9])
    expect_rejection(path, "file", "not a readable safetensors file")


def test_rejects_a_header_that_lies_about_offsets(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, STANDARD)
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header["W"]["data_offsets"][1] += 8
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    expect_rejection(path, "file", "not a readable safetensors file")


class _Payload:
    """Unpickling this would create a file: proof that nothing is unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_is_rejected_and_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps({"W": _Payload(str(marker))}))
    with pytest.raises(WeightFileError, match="not a readable safetensors file"):
        load_weights(path)
    assert not marker.exists()


def test_save_rejects_what_is_not_params(tmp_path):
    with pytest.raises(ValueError, match="LSTMParams"):
        save_weights(tmp_path / "w.safetensors", {"W": PEEPHOLE.W})


def test_loaded_params_are_validated_params():
    assert isinstance(PEEPHOLE, LSTMParams)
