"""The shared weight file: round trips, metadata, and every way a file can be wrong (versions 1 and 2)."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from spec import (
    LayerParams,
    LSTMParams,
    WeightFileError,
    load_weights,
    save_weights,
    weights_file,
)
from spec.cases import CASES, case_by_name, make_case_data
from spec.weights_file import (
    LayerWeights,
    layer_metadata_for,
    load_layer_weights,
    metadata_for,
    save_layer_weights,
)
from tests.spec.checks import one_cell

PEEPHOLE = one_cell(make_case_data(case_by_name("I-ne-H-peephole"))).params  # I=7, H=2
STANDARD = one_cell(make_case_data(case_by_name("small"))).params  # I=5, H=4


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


def expect_rejection(path, tensor, *fragments, load=load_weights):
    with pytest.raises(WeightFileError) as info:
        load(path)
    error = info.value
    assert error.tensor == tensor, f"error names {error.tensor!r}, expected {tensor!r}: {error}"
    assert str(path) in str(error)
    for fragment in fragments:
        assert fragment in str(error), f"{fragment!r} missing from: {error}"
    return error


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


def test_rejects_a_directory_as_not_a_regular_file(tmp_path):
    expect_rejection(tmp_path, "file", "not a regular file: a directory")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_rejects_a_fifo_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "w.safetensors"
    os.mkfifo(fifo)
    expect_rejection(fifo, "file", "not a regular file: a FIFO")


@pytest.mark.parametrize(
    "key, value, shown",
    [
        ("hidden_size", "\u00b3", "'\u00b3'"),  # superscript three: str.isdigit() says yes, int() raises
        ("input_size", "\u0667", "'\u0667'"),  # Arabic-Indic seven
        ("hidden_size", "+2", "'+2'"),
        ("hidden_size", "-2", "'-2'"),
        ("hidden_size", " 2", "' 2'"),
        ("hidden_size", "2\n", "'2\\n'"),
        ("input_size", "7.0", "'7.0'"),
        ("hidden_size", "02", "'02'"),
        ("hidden_size", "1234567890", "'1234567890'"),
        ("hidden_size", "1" * 5000, "a string of 5000 characters"),  # int() refuses over 4300 digits
    ],
    ids=["superscript", "arabic-indic", "plus", "minus", "space", "newline", "decimal-point", "leading-zero", "ten-digits", "5000-digits"],
)
def test_sizes_are_plain_ascii_decimal(key, value, shown, tmp_path):
    path = write(tmp_path / "bad.safetensors", GOOD, {**GOOD_META, key: value})
    error = expect_rejection(path, f"metadata '{key}'", "a positive integer", "1 to 9 ASCII digits", f"got {shown}")
    assert len(str(error)) < 400


def read_header(path):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def write_header(path, header, data, raw=None):
    raw = json.dumps(header).encode() if raw is None else raw
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def test_rejects_a_truncated_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, PEEPHOLE)  # data order U, W, b, p
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 9])
    expect_rejection(path, "p", "not a readable safetensors file", "data_offsets out of bounds")


def test_rejects_a_header_that_lies_about_offsets(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, STANDARD)
    header, data = read_header(path)
    header["W"]["data_offsets"][1] += 8
    write_header(path, header, data)
    expect_rejection(path, "W", "not a readable safetensors file", "byte size disagrees", "expected 640 bytes (F64 x (4, 4, 5))", "got 648 bytes")


def shift(header, name, by):
    header[name]["data_offsets"] = [offset + by for offset in header[name]["data_offsets"]]


def gap_before_b(header, data):
    shift(header, "b", 8)
    data.extend(bytes(8))


@pytest.mark.parametrize(
    "change, tensor, fragments",
    [
        (lambda h, d: h["W"].update(shape=[4, -4, 5]), "W", ("malformed header entry",)),
        (lambda h, d: h["U"].update(data_offsets=[0]), "U", ("malformed header entry", "'data_offsets': [0]")),
        (lambda h, d: h["b"].update(shape=[True, 4]), "b", ("malformed header entry",)),
        (lambda h, d: h["b"].pop("dtype"), "b", ("malformed header entry",)),
        (lambda h, d: h.update(__metadata__={**h["__metadata__"], "input_size": 5}), "header", ("malformed __metadata__", "an object of strings")),
        (lambda h, d: h["W"]["data_offsets"].reverse(), "W", ("data_offsets out of bounds", "[1152, 512]")),
        (lambda h, d: shift(h, "W", -8), "W", ("data overlaps the tensor before it", "expected a begin of 512 (the end of 'U')", "[504, 1144]")),
        (gap_before_b, "b", ("gap before its data", "expected a begin of 1152 (the end of 'W')", "[1160, 1288]")),
        (lambda h, d: d.extend(bytes(8)), "header", ("bytes after the last tensor", "expected 1280 bytes", "got 1288 bytes")),
    ],
    ids=["negative-dim", "one-offset", "bool-dim", "no-dtype", "metadata-not-strings", "begin-after-end", "overlap", "gap", "trailing-bytes"],
)
def test_rejects_a_malformed_header(change, tensor, fragments, tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, STANDARD)  # data order U [0, 512], W [512, 1152], b [1152, 1280]
    header, data = read_header(path)
    data = bytearray(data)
    change(header, data)
    write_header(path, header, bytes(data))
    expect_rejection(path, tensor, "not a readable safetensors file", *fragments)


@pytest.mark.parametrize(
    "raw, fragments",
    [
        (b"{not json}", ("malformed JSON", "expected a JSON object in UTF-8")),
        (b'{"W": "\xff"}', ("malformed JSON", "utf-8")),
        (b"[]", ("malformed JSON", "expected a JSON object, got []")),
        (b"[" * 100_000, ("malformed JSON",)),  # deep enough to exhaust the recursion limit
        (b'{"W": {}, "W": {}}', ("malformed JSON", "duplicate key 'W'")),
    ],
    ids=["not-json", "not-utf8", "not-an-object", "too-deep", "duplicate-key"],
)
def test_rejects_a_header_that_is_not_a_json_object(raw, fragments, tmp_path):
    path = tmp_path / "w.safetensors"
    write_header(path, None, b"", raw=raw)
    expect_rejection(path, "header", "not a readable safetensors file", *fragments)


def test_rejects_a_header_length_beyond_the_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, STANDARD)
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", len(data)) + data[8:])
    expect_rejection(path, "header", "header length beyond the file", f"expected at most {len(data) - 8} bytes", f"got {len(data)} bytes")


def test_rejects_a_header_over_the_safetensors_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(weights_file, "_MAX_HEADER", 64)
    path = tmp_path / "w.safetensors"
    save_weights(path, STANDARD)
    expect_rejection(path, "header", "header too large", "expected at most 64 bytes")


def test_rejects_a_file_shorter_than_the_header_length(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"\x01\x00")
    expect_rejection(path, "header", "not a readable safetensors file", "8 bytes", "got 2 bytes")


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


def write_zip(path):
    with zipfile.ZipFile(path, "w") as archive:  # the layout torch.save writes
        archive.writestr("model/data.pkl", pickle.dumps({"W": [0.5]}))


def write_with(save):
    def writer(path):
        with open(path, "wb") as stream:  # a file object: np.save and np.savez append no suffix
            save(stream)

    return writer


@pytest.mark.parametrize(
    "make, named",
    [
        (lambda path: path.write_bytes(pickle.dumps({"W": [0.5]}, protocol=2)), "a pickle (protocol 2)"),
        (lambda path: path.write_bytes(pickle.dumps({"W": [0.5]}, protocol=5)), "a pickle (protocol 5)"),
        (write_zip, "a zip archive, as torch.save"),
        (write_with(lambda f: np.savez(f, W=PEEPHOLE.W)), "a zip archive"),
        (write_with(lambda f: np.save(f, PEEPHOLE.W)), "a NumPy .npy file"),
        (lambda path: path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(2040)), "an HDF5 file"),
    ],
    ids=["pickle-2", "pickle-5", "torch-zip", "npz", "npy", "hdf5"],
)
def test_names_the_format_of_a_file_that_is_not_safetensors(make, named, tmp_path):
    path = tmp_path / "model.safetensors"
    make(path)
    expect_rejection(path, "file", "not a readable safetensors file", named, "never unpickles", "spec.save_weights")


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy-pickle"])
def test_names_what_torch_save_writes(zipped, tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "lstm.pt"
    torch.save(torch.nn.LSTM(5, 4).state_dict(), path, _use_new_zipfile_serialization=zipped)
    expect_rejection(path, "file", "a zip archive, as torch.save" if zipped else "a pickle (protocol 2)", "never unpickles")


def test_a_header_length_that_starts_like_a_pickle_still_loads(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, STANDARD)
    header, data = read_header(path)
    raw = json.dumps(header).encode().ljust(640)  # safetensors pads headers with spaces too
    write_header(path, header, data, raw=raw)
    assert path.read_bytes()[:2] == b"\x80\x02"  # what a protocol 2 pickle starts with
    assert np.array_equal(load_weights(path).W, STANDARD.W)


_MEASURE = """
import sys
from spec import load_weights


def status(field):
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field + ":"))


load_weights(sys.argv[2])  # a small file first: whatever loading imports is in the baseline
try:
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current size: peaks while importing are not the loader's
except OSError:
    pass
before = status("VmRSS")
params = load_weights(sys.argv[1])
print(status("VmHWM") - before, params.hidden_size)
"""


def test_loading_needs_about_the_file_size_in_memory(tmp_path):
    # VmHWM, the peak resident size of this process alone. Not ru_maxrss: a child's starts at its
    # parent's size (Linux keeps the peak across exec). Not tracemalloc: it misses memory maps.
    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs Linux's /proc/self/status")
    H = I = 1024  # W and U take 32 MiB each in float64
    big, small = tmp_path / "big.safetensors", tmp_path / "small.safetensors"
    save_weights(big, LSTMParams(np.full((4, H, I), 0.5), np.full((4, H, H), 0.25), np.zeros((4, H)), np.ones((3, H))))
    save_weights(small, STANDARD)
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(big), str(small)],
        capture_output=True, text=True, timeout=120, check=False, cwd=Path(__file__).resolve().parents[2],
    )
    assert run.returncode == 0, run.stderr
    peak, hidden = (int(word) for word in run.stdout.split())
    assert hidden == H
    size = big.stat().st_size
    # The arrays take 1x; the check for non-finite values adds 1/8 (a bool per float64) for a while.
    # Loading through safetensors' memory map kept the mapped file resident beside the arrays: 2x.
    assert peak < 1.3 * size + 16 * 2**20, f"loading a {size / 2**20:.0f} MiB file took {peak / 2**20:.0f} MiB more at its peak"


def test_save_rejects_what_is_not_params(tmp_path):
    with pytest.raises(ValueError, match="LSTMParams"):
        save_weights(tmp_path / "w.safetensors", {"W": PEEPHOLE.W})


def test_loaded_params_are_validated_params():
    assert isinstance(PEEPHOLE, LSTMParams)


# Version 2: a stack of layers and directions.


def save_case(path, case, dtype=np.float64):
    params = make_case_data(case, dtype).params
    save_layer_weights(path, params, direction=case.layer.direction, coupled_input_forget=case.layer.coupled_input_forget)
    return params


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_layer_round_trip_is_exact(case, dtype, tmp_path):
    path = tmp_path / "w.safetensors"
    params = save_case(path, case, dtype)
    loaded = load_layer_weights(path)
    assert isinstance(loaded, LayerWeights)
    assert (loaded.direction, loaded.coupled_input_forget) == (case.layer.direction, case.layer.coupled_input_forget)
    assert loaded.params.num_directions == params.num_directions and loaded.params.dtype == np.dtype(dtype)
    assert loaded.params.tensors().keys() == params.tensors().keys()
    for name, tensor in params.tensors().items():
        assert np.array_equal(loaded.params.tensors()[name], tensor), name
    # The file and the run-time settings together give back the case's configuration.
    runtime = {key: getattr(case.layer, key) for key in ("forget_bias", "cell_clip", "gate_clip", "proj_clip", "zero_output_for_mask")}
    assert loaded.config(**runtime) == case.layer


@pytest.mark.parametrize("name", ["bidirectional", "coupled-stack", "lstmp-stack"])
def test_tensor_names_say_layer_and_direction(name, tmp_path):
    # A round trip alone would not notice a writer and a reader that swap directions alike.
    from safetensors.numpy import load_file

    case = case_by_name(name)
    path = tmp_path / "w.safetensors"
    params = save_case(path, case)
    words = {"forward": ["forward"], "reverse": ["reverse"], "bidirectional": ["forward", "reverse"]}[case.layer.direction]
    expected = {
        f"layer{l}.{word}.{kind}": tensor
        for l in range(case.L)
        for d, word in enumerate(words)
        for kind, tensor in params.cell(l, d).tensors().items()
    }
    stored = load_file(str(path))
    assert stored.keys() == expected.keys()
    for key, tensor in expected.items():
        assert np.array_equal(stored[key], tensor), key


def test_layer_metadata_describes_the_file(tmp_path):
    from safetensors import safe_open

    path = tmp_path / "w.safetensors"
    save_case(path, case_by_name("lstmp-stack"))
    with safe_open(str(path), framework="np") as handle:
        meta = handle.metadata()
    assert meta == {
        "format": "lstm-conformance-weights",
        "format_version": "2",
        "gate_order": "i,f,g,o",
        "peephole_gate_order": "i,f,o",
        "variant": "peephole",
        "input_size": "3",
        "hidden_size": "4",
        "proj_size": "2",
        "num_layers": "2",
        "direction": "bidirectional",
        "num_directions": "2",
        "coupled_input_forget": "0",
        "layer_norm": "0",
        "proj_bias": "0",
    }


def assert_params_equal(loaded, expected):
    assert loaded.tensors().keys() == expected.tensors().keys()
    for name, tensor in expected.tensors().items():
        assert np.array_equal(loaded.tensors()[name], tensor), name


def test_a_version_2_file_without_the_layer_norm_and_proj_bias_keys_reads_as_neither(tmp_path):
    """The files written before the two features hold neither key: they load as they did."""
    case = case_by_name("lstmp-stack")
    tensors, meta = good_file(case.name)
    del meta["layer_norm"], meta["proj_bias"]
    path = tmp_path / "old.safetensors"
    save_file(tensors, str(path), metadata=meta)
    loaded = load_layer_weights(path)
    assert not loaded.params.layer_norm and not loaded.params.proj_bias
    assert_params_equal(loaded.params, make_case_data(case).params)


@pytest.mark.parametrize("name", ["layer-norm-full", "layer-norm-cifg", "proj-bias"])
def test_layer_norm_and_proj_bias_round_trip_with_their_metadata(name, tmp_path):
    case = case_by_name(name)
    path = tmp_path / "w.safetensors"
    save_case(path, case)
    loaded = load_layer_weights(path)
    assert loaded.config().layer_norm == case.layer.layer_norm and loaded.config().proj_bias == case.layer.proj_bias
    assert_params_equal(loaded.params, make_case_data(case).params)


def test_proj_bias_without_a_projection_is_refused(tmp_path):
    tensors, meta = good_file("one-layer")
    meta["proj_bias"] = "1"
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(WeightFileError, match="a projection bias without a projection") as info:
        load_layer_weights(path)
    assert info.value.tensor == "metadata 'proj_bias'"


def test_a_layer_norm_file_missing_ln_names_the_tensor(tmp_path):
    tensors, meta = good_file("layer-norm")
    del tensors["layer0.forward.ln"]
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(WeightFileError, match="missing tensor") as info:
        load_layer_weights(path)
    assert info.value.tensor == "layer0.forward.ln"


def test_layer_metadata_without_projection_or_peepholes(tmp_path):
    params = make_case_data(case_by_name("coupled-stack")).params.astype(np.float32)
    params = LayerParams(tuple(cell.without_peepholes() for cell in params.cells))
    meta = layer_metadata_for(params, "reverse", True)
    assert "peephole_gate_order" not in meta
    assert (meta["variant"], meta["proj_size"], meta["direction"], meta["num_directions"], meta["coupled_input_forget"]) == (
        "standard", "none", "reverse", "1", "1"
    )


@pytest.mark.parametrize("params", [PEEPHOLE, STANDARD.astype(np.float32)], ids=["peephole", "standard-float32"])
def test_a_version_1_file_loads_as_a_one_layer_forward_stack(params, tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, params)
    assert np.array_equal(load_weights(path).W, params.W)  # still the cell, for load_weights
    loaded = load_layer_weights(path)
    assert (loaded.direction, loaded.coupled_input_forget) == ("forward", False)
    assert (loaded.params.num_layers, loaded.params.num_directions) == (1, 1)
    assert loaded.params.cells[0].tensors().keys() == params.tensors().keys()
    for name, tensor in params.tensors().items():
        assert np.array_equal(loaded.params.cells[0].tensors()[name], tensor), name


def test_load_weights_refuses_a_version_2_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_case(path, case_by_name("one-layer"))  # even one forward layer: the caller asked for a cell
    expect_rejection(path, "metadata 'format_version'", "expected '1'", "got '2'", "spec.load_layer_weights")


def test_save_weights_refuses_a_projection(tmp_path):
    # Version 1 has no W_hr: the file would be one that load_weights refuses.
    cell = make_case_data(case_by_name("projection")).params.cells[0]
    with pytest.raises(ValueError, match="save_layer_weights") as info:
        save_weights(tmp_path / "w.safetensors", cell)
    assert info.value.tensor == "params.W_hr"
    assert not (tmp_path / "w.safetensors").exists()


BIDI = make_case_data(case_by_name("stacked-bidirectional")).params  # L=2, D=2, I=H=3


@pytest.mark.parametrize(
    "params, options, tensor, fragments",
    [
        (PEEPHOLE, {"direction": "forward"}, "params", ("spec.LayerParams", "LSTMParams")),
        (BIDI, {"direction": "backward"}, "direction", ("'forward' or 'reverse' or 'bidirectional'", "'backward'")),
        (BIDI, {"direction": None}, "direction", ("got None",)),
        (BIDI, {"direction": "reverse"}, "direction", ("disagrees with params.num_directions", "'bidirectional'")),
        (LayerParams((PEEPHOLE,)), {"direction": "bidirectional"}, "direction", ("'forward' or 'reverse'",)),
        (BIDI, {"direction": "bidirectional", "coupled_input_forget": 1}, "coupled_input_forget", ("True or False",)),
    ],
    ids=["not-layer-params", "unknown-direction", "no-direction", "reverse-for-two-directions", "bidirectional-for-one", "coupled-not-bool"],
)
def test_save_layer_weights_rejects(params, options, tensor, fragments, tmp_path):
    path = tmp_path / "w.safetensors"
    with pytest.raises(ValueError) as info:
        save_layer_weights(path, params, **options)
    assert info.value.tensor == tensor, str(info.value)
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} missing from: {info.value}"
    assert not path.exists()


def good_file(name):
    """A valid version-2 file's tensors and metadata, to break one thing at a time."""
    case = case_by_name(name)
    params = make_case_data(case).params
    words = {"forward": ["forward"], "reverse": ["reverse"], "bidirectional": ["forward", "reverse"]}[case.layer.direction]
    tensors = {
        f"layer{k // case.D}.{words[k % case.D]}.{kind}": t for k, cell in enumerate(params.cells) for kind, t in cell.tensors().items()
    }
    return tensors, layer_metadata_for(params, case.layer.direction, case.layer.coupled_input_forget)


# lstmp-stack: I=3, H=4, P=2, peephole, 2 layers, bidirectional. stacked-bidirectional: I=H=P=3, standard, 2
# layers. coupled-stack: I=3, H=4, peephole, coupled, 2 layers, reverse. stacked: I=H=3, 3 forward layers.
LSTMP, LSTMP_META = good_file("lstmp-stack")
PLAIN, PLAIN_META = good_file("stacked-bidirectional")
REVERSE, REVERSE_META = good_file("coupled-stack")
THREE, THREE_META = good_file("stacked")


def without(tensors, *names):
    return {k: v for k, v in tensors.items() if k not in names}


def with_nan_in_forget_row(t):
    t = t.copy()
    t[1, 0, 0] = np.nan
    return t


@pytest.mark.parametrize(
    "tensors, meta, tensor, fragments",
    [
        # Tensors of a cell: missing, unexpected, badly named.
        (without(LSTMP, "layer1.reverse.U"), LSTMP_META, "layer1.reverse.U", ("missing tensor", "layers 0 to 1, forward and reverse")),
        ({**LSTMP, "layer0.forward.bias_hh": LSTMP["layer0.forward.b"]}, LSTMP_META, "layer0.forward.bias_hh",
         ("unexpected tensor", "names layer<l>.<forward|reverse>.<W|U|b|p|W_hr|b_hr|ln>")),
        ({**PLAIN, "l0.d1.W": PLAIN["layer0.reverse.W"]}, PLAIN_META, "l0.d1.W", ("unexpected tensor", "names layer<l>")),
        ({**PLAIN, "layer01.forward.b": PLAIN["layer0.forward.b"]}, PLAIN_META, "layer01.forward.b", ("unexpected tensor",)),
        ({**PLAIN, "W": PLAIN["layer0.forward.W"]}, PLAIN_META, "W", ("unexpected tensor", "names layer<l>")),
        ({**PLAIN, f"layer{'1' * 5000}.forward.W": PLAIN["layer1.forward.W"]}, PLAIN_META, f"layer{'1' * 5000}.forward.W",
         ("unexpected tensor", "layer1111", "(5015 characters)")),
        ({**PLAIN, **{k.replace("layer1", "layer3"): v for k, v in PLAIN.items() if k.startswith("layer1.")}}, PLAIN_META,
         "layer3.forward.U", ("unexpected tensor", "layers 0 to 1")),
        # Peepholes: p without the variant, or missing with it.
        (LSTMP, {**LSTMP_META, "variant": "standard"}, "layer0.forward.p", ("unexpected tensor", "variant 'standard'")),
        ({**PLAIN, "layer1.reverse.p": np.zeros((3, 3))}, PLAIN_META, "layer1.reverse.p", ("unexpected tensor", "variant 'standard'")),
        (without(LSTMP, "layer0.reverse.p"), LSTMP_META, "layer0.reverse.p", ("missing tensor", "variant 'peephole'")),
        # Projection: W_hr without proj_size or missing with it, sizes that disagree.
        (LSTMP, {**LSTMP_META, "proj_size": "none"}, "layer0.forward.W_hr", ("unexpected tensor", "proj_size 'none'")),
        (without(LSTMP, "layer1.forward.W_hr"), LSTMP_META, "layer1.forward.W_hr", ("missing tensor", "proj_size '2'")),
        (LSTMP, {**LSTMP_META, "proj_size": "3"}, "layer0.forward.W_hr", ("wrong shape", "expected (3, 4)", "got (2, 4)", "proj_size P = 3")),
        ({**LSTMP, "layer0.reverse.U": np.zeros((4, 4, 4))}, LSTMP_META, "layer0.reverse.U",
         ("wrong shape", "expected (4, 4, 2)", "got (4, 4, 4)", "proj_size P = 2")),
        # Stacking: layer l >= 1 reads D * P features.
        ({**LSTMP, "layer1.forward.W": np.zeros((4, 4, 2))}, LSTMP_META, "layer1.forward.W",
         ("wrong shape", "expected (4, 4, 4)", "got (4, 4, 2)", "D * P = 4")),
        ({**PLAIN, "layer1.reverse.W": np.zeros((4, 3, 3))}, PLAIN_META, "layer1.reverse.W", ("wrong shape", "expected (4, 3, 6)", "got (4, 3, 3)")),
        (PLAIN, {**PLAIN_META, "input_size": "6"}, "layer0.forward.W", ("wrong shape", "expected (4, 3, 6)", "input_size I = 6")),
        (LSTMP, {**LSTMP_META, "hidden_size": "5"}, "layer0.forward.W", ("wrong shape", "expected (4, 5, 3)", "got (4, 4, 3)")),
        # num_layers, direction and num_directions against the tensors.
        (LSTMP, {**LSTMP_META, "num_layers": "3"}, "metadata 'num_layers'", ("disagrees with the tensors", "expected '2'", "got '3'")),
        (THREE, {**THREE_META, "num_layers": "2"}, "metadata 'num_layers'", ("expected '3' (the file holds layers 0 to 2)", "got '2'")),
        (LSTMP, {**LSTMP_META, "num_layers": "999999999"}, "metadata 'num_layers'", ("expected '2'",)),
        # A gap in the layers: named without listing every name a huge num_layers would expect.
        (without(THREE, *(k for k in THREE if k.startswith("layer1."))), {**THREE_META, "num_layers": "200000"}, "layer1.forward.W",
         ("missing tensor", "no tensor of layer 1")),
        (LSTMP, {**LSTMP_META, "direction": "forward", "num_directions": "1"}, "metadata 'direction'",
         ("disagrees with the tensors", "expected 'bidirectional'", "got 'forward'")),
        (REVERSE, {**REVERSE_META, "direction": "forward"}, "metadata 'direction'", ("expected 'reverse' (the file holds reverse cells)",)),
        (REVERSE, {**REVERSE_META, "direction": "bidirectional", "num_directions": "2"}, "metadata 'direction'", ("expected 'reverse'",)),
        (THREE, {**THREE_META, "direction": "reverse"}, "metadata 'direction'", ("expected 'forward'", "got 'reverse'")),
        (LSTMP, {**LSTMP_META, "num_directions": "1"}, "metadata 'num_directions'", ("expected '2'", "got '1'", "'bidirectional'")),
        (REVERSE, {**REVERSE_META, "num_directions": "2"}, "metadata 'num_directions'", ("expected '1'", "'reverse'")),
        # dtypes and values.
        ({**LSTMP, "layer1.reverse.b": LSTMP["layer1.reverse.b"].astype(np.float32)}, LSTMP_META, "layer1.reverse.b",
         ("dtype differs from layer0.forward.W's", "F64", "F32")),
        ({k: v.astype(np.float16) for k, v in REVERSE.items()}, REVERSE_META, "layer0.reverse.W", ("unsupported dtype", "F16")),
        ({**LSTMP, "layer1.reverse.W_hr": np.full((2, 4), np.inf)}, LSTMP_META, "layer1.reverse.W_hr", ("non-finite", "inf")),
        # The unused forget-gate rows of coupled gates are stored as given, but must be finite.
        ({**REVERSE, "layer1.reverse.W": with_nan_in_forget_row(REVERSE["layer1.reverse.W"])}, REVERSE_META, "layer1.reverse.W",
         ("non-finite", "nan", "(1, 0, 0)")),
        # The metadata every version has, in a version-2 file.
        (LSTMP, {**LSTMP_META, "format_version": "3"}, "metadata 'format_version'", ("expected '1' or '2'", "got '3'")),
        (LSTMP, {**LSTMP_META, "format": "lstm-weights"}, "metadata 'format'", ("'lstm-conformance-weights'",)),
        (LSTMP, {**LSTMP_META, "gate_order": "i,f,o,g"}, "metadata 'gate_order'", ("'i,f,g,o'",)),
        (LSTMP, without(LSTMP_META, "peephole_gate_order"), "metadata 'peephole_gate_order'", ("got None",)),
        # A version-1 layout with version-2 metadata, and the other way round.
        (STANDARD.tensors(), layer_metadata_for(LayerParams((STANDARD,)), "forward", False), "U", ("unexpected tensor", "names layer<l>")),
        ({f"layer0.forward.{k}": v for k, v in STANDARD.tensors().items()}, metadata_for(STANDARD), "U", ("missing tensor",)),
    ],
    ids=[
        "missing-U", "unexpected-name", "other-naming-scheme", "layer-index-leading-zero", "version-1-name-among-cells",
        "layer-index-5000-digits", "layer-beyond-num-layers",
        "p-without-peephole-variant", "stray-p-in-standard-stack", "p-missing-with-peephole",
        "W_hr-without-proj-size", "W_hr-missing-with-proj-size", "proj-size-disagrees-with-W_hr", "U-width-not-P",
        "layer-1-W-width-P-not-D-times-P", "layer-1-W-width-I-not-D-times-P", "input-size-disagrees", "hidden-size-disagrees",
        "num-layers-too-many", "num-layers-too-few", "num-layers-huge", "layer-gap-under-a-huge-num-layers",
        "direction-forward-for-bidirectional-cells", "direction-forward-for-reverse-cells", "direction-bidirectional-for-reverse-cells",
        "direction-reverse-for-forward-cells", "num-directions-1-for-bidirectional", "num-directions-2-for-reverse",
        "mixed-dtypes-across-cells", "float16", "inf", "nan-in-unused-forget-row",
        "format-version-3", "format", "gate-order", "peephole-gate-order-missing",
        "version-1-tensors-with-version-2-metadata", "version-2-tensors-with-version-1-metadata",
    ],
)
def test_layer_file_rejects(tensors, meta, tensor, fragments, tmp_path):
    path = write(tmp_path / "bad.safetensors", tensors, meta)
    error = expect_rejection(path, tensor, *fragments, load=load_layer_weights)
    assert len(str(error)) < 800, str(error)  # however large the stack, the message stays readable


@pytest.mark.parametrize(
    "key, value, rule",
    [
        ("proj_size", "0", "'none' or a positive integer"),
        ("proj_size", "None", "'none' or a positive integer"),
        ("proj_size", "", "'none' or a positive integer"),
        ("proj_size", "02", "'none' or a positive integer"),
        ("proj_size", None, "'none' or a positive integer"),
        ("num_layers", "0", "a positive integer"),
        ("num_layers", "+2", "1 to 9 ASCII digits"),
        ("num_layers", "2.0", "1 to 9 ASCII digits"),
        ("num_layers", "\u00b2", "1 to 9 ASCII digits"),
        ("num_layers", "1" * 5000, "1 to 9 ASCII digits"),
        ("num_layers", None, "a positive integer"),
        ("direction", "backward", "'forward' or 'reverse' or 'bidirectional'"),
        ("direction", "Bidirectional", "'bidirectional'"),
        ("direction", None, "'bidirectional'"),
        ("num_directions", "02", "expected '2'"),
        ("num_directions", " 2", "expected '2'"),
        ("num_directions", None, "expected '2'"),
        ("coupled_input_forget", "true", "'0' or '1'"),
        ("coupled_input_forget", "01", "'0' or '1'"),
        ("coupled_input_forget", None, "'0' or '1'"),
    ],
    ids=[
        "proj-size-zero", "proj-size-None", "proj-size-empty", "proj-size-leading-zero", "proj-size-absent",
        "num-layers-zero", "num-layers-plus", "num-layers-decimal-point", "num-layers-superscript", "num-layers-5000-digits",
        "num-layers-absent", "direction-unknown", "direction-capitalised", "direction-absent",
        "num-directions-leading-zero", "num-directions-space", "num-directions-absent",
        "coupled-true", "coupled-01", "coupled-absent",
    ],
)
def test_layer_metadata_is_strict(key, value, rule, tmp_path):
    meta = without(LSTMP_META, key) if value is None else {**LSTMP_META, key: value}
    path = write(tmp_path / "bad.safetensors", LSTMP, meta)
    error = expect_rejection(path, f"metadata '{key}'", "wrong or missing value", rule, load=load_layer_weights)
    assert len(str(error)) < 400


@pytest.mark.parametrize("load", [load_weights, load_layer_weights], ids=["version-1", "version-2"])
def test_a_huge_tensor_name_is_cut_short_in_the_message(load, tmp_path):
    name = "W" * 100_000
    path = write(tmp_path / "bad.safetensors", {**GOOD, name: GOOD["b"]}, GOOD_META)
    error = expect_rejection(path, name, "unexpected tensor", "(100000 characters)", load=load)
    assert len(str(error)) < 800


@pytest.mark.parametrize("save", ["save_weights", "save_layer_weights"])
@pytest.mark.parametrize("where, why", [("directory", "a directory"), ("missing", "no such directory"), ("under-a-file", "is not a directory")])
def test_a_target_that_cannot_be_written_is_named_with_the_reason(save, where, why, tmp_path):
    """safetensors' own error names its temporary file (or no file at all): the message names the target."""
    (tmp_path / "a-file").write_bytes(b"")
    path = {"directory": tmp_path, "missing": tmp_path / "missing" / "w.safetensors", "under-a-file": tmp_path / "a-file" / "w.safetensors"}[where]
    with pytest.raises(WeightFileError) as info:
        if save == "save_weights":
            save_weights(path, STANDARD)
        else:
            save_layer_weights(path, BIDI, direction="bidirectional")
    message = str(info.value)
    assert message.startswith(f"{path}: file: cannot write") and why in message and ".tmp" not in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_the_recogniser_of_foreign_files_is_shared(tmp_path):
    """The porting command names foreign files with the loader's own recogniser: one table of signatures."""
    assert weights_file.foreign_format(b"PK\x03\x04" + bytes(5)).startswith("a zip archive, as torch.save")
    assert weights_file.foreign_format(b"\x89HDF\r\n\x1a\n\x00").startswith("an HDF5 file")
    assert weights_file.foreign_format((640).to_bytes(8, "little") + b"{") is None  # a safetensors header length of 640
    assert weights_file.foreign_format(b"") is None
