"""The porting command (backends/port.py): a round trip through every format, refusals of what a target cannot
hold, and proof that a wrong port is caught (by the read-back, and by running both sides against the spec)."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import numpy as np
import pytest

from backends import port
from backends.base import framework_problem
from spec.layer_cases import layer_case_by_name, make_layer_case_data
from spec.params import LayerParams
from spec.weights_file import save_layer_weights
from tests.suite import ROOT, subprocess_environment


def needs(*modules: str):
    missing = [m for m in modules if framework_problem(m, "") is not None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} (not installed)")


def case_params(name: str) -> tuple[LayerParams, str]:
    data = make_layer_case_data(layer_case_by_name(name), np.float32)
    return data.params, data.config.direction


def torch_file(tmp_path, name: str):
    """A torch.nn.LSTM state_dict file of a layer case's weights, written by the command itself (spec -> torch)."""
    params, direction = case_params(name)
    spec_path, torch_path = tmp_path / f"{name}.lstm.safetensors", tmp_path / f"{name}.safetensors"
    save_layer_weights(spec_path, params, direction=direction)
    assert port.main(["convert", str(spec_path), str(torch_path)]) == port.EXIT_AGREES
    return torch_path, params


def run_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backends.port", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=subprocess_environment())


@needs("torch", "keras", "tensorflow", "flax", "onnxruntime")
def test_a_two_layer_bidirectional_lstm_round_trips_torch_keras_flax_onnx_and_back(tmp_path):
    source, _ = torch_file(tmp_path, "stacked-bidirectional")
    done = run_command("roundtrip", str(source), "--via", "keras,flax,onnx", "--workdir", str(tmp_path / "hops"))
    output = done.stdout + done.stderr[-3000:]
    assert done.returncode == port.EXIT_AGREES, output
    for hop in ("torch -> keras", "keras -> flax", "flax -> onnx", "onnx -> torch"):
        assert f"== {hop}" in done.stdout, output
    assert done.stdout.count("read back: the same parameters, bit for bit") == 4, output
    assert done.stdout.count(": agrees") == 12 and "DISAGREES" not in done.stdout, output
    assert "round trip torch -> keras -> flax -> onnx -> torch: the same parameters as the start, bit for bit" in done.stdout


@needs("torch")
def test_a_projection_into_keras_is_refused_with_the_reason(tmp_path, capsys):
    source, _ = torch_file(tmp_path, "lstmp-padded")
    capsys.readouterr()
    assert port.main(["convert", str(source), str(tmp_path / "lstmp.weights.h5")]) == port.EXIT_REFUSED
    out = capsys.readouterr().out
    assert "projection 2" in out and "refused: keras cannot hold this LSTM: Keras' LSTM has no projection" in out
    assert not (tmp_path / "lstmp.weights.h5").exists()


@needs("torch")
def test_peepholes_into_torch_are_refused_with_the_reason(tmp_path, capsys):
    params, direction = case_params("bidirectional")
    source = tmp_path / "peep.lstm.safetensors"
    save_layer_weights(source, params, direction=direction)
    assert port.main(["convert", str(source), str(tmp_path / "peep.safetensors")]) == port.EXIT_REFUSED
    out = capsys.readouterr().out
    assert "refused: torch cannot hold this LSTM" in out and "peephole" in out.lower(), out


def permuted(params: LayerParams, order=(1, 0, 2, 3)) -> LayerParams:
    """The gates of every cell in another order: the silent bug of a port."""
    cells = tuple(dataclasses.replace(c, W=c.W[list(order)], U=c.U[list(order)], b=c.b[list(order)]) for c in params.cells)
    return LayerParams(cells, params.num_directions)


class _PermutingRow:
    """A row whose layout hooks agree with each other but swap gates i and f: its files read back bit for bit, so
    only running them can tell."""

    def __init__(self, row):
        self._row = row

    def to_native_layer(self, params, layer):
        return self._row.to_native_layer(permuted(params), layer)

    def from_native_layer(self, native, layer):
        return permuted(self._row.from_native_layer(native, layer))

    def __getattr__(self, name):
        return getattr(self._row, name)


@needs("torch", "onnxruntime", "onnx")
def test_a_consistent_gate_permutation_reads_back_bit_for_bit_and_is_still_caught(tmp_path, capsys, monkeypatch):
    source, _ = torch_file(tmp_path, "stacked-bidirectional")
    real_row = port.FORMATS["onnx"].row
    monkeypatch.setattr(port.OnnxFormat, "row", property(lambda self: _PermutingRow(real_row)))
    capsys.readouterr()
    assert port.main(["convert", str(source), str(tmp_path / "out.onnx")]) == port.EXIT_DISAGREES
    out = capsys.readouterr().out
    assert "read back: the same parameters, bit for bit" in out
    assert re.search(r"onnx file \(onnxruntime.InferenceSession\) vs the spec +worst error .*x the tolerance: DISAGREES", out), out


@needs("torch", "onnxruntime", "onnx")
def test_a_file_written_wrong_is_caught_by_the_read_back(tmp_path, capsys, monkeypatch):
    source, _ = torch_file(tmp_path, "stacked-bidirectional")
    write = port.OnnxFormat.write
    monkeypatch.setattr(port.OnnxFormat, "write", lambda self, path, params, arch: write(self, path, permuted(params), arch))
    capsys.readouterr()
    assert port.main(["convert", str(source), str(tmp_path / "out.onnx")]) == port.EXIT_DISAGREES
    out = capsys.readouterr().out
    assert "read back: DIFFERENT in layer 0 direction 0 W" in out, out


@needs("torch")
def test_formats_come_from_the_suffix_longest_first_and_unknown_ones_are_an_error(tmp_path, capsys):
    assert port.format_of(tmp_path / "a.lstm.safetensors", None).name == "spec"
    assert port.format_of(tmp_path / "a.safetensors", None).name == "torch"
    assert port.format_of(tmp_path / "a.weights.h5", None).name == "keras"
    assert port.main(["convert", str(tmp_path / "a.bin"), str(tmp_path / "b.onnx")]) == port.EXIT_REFUSED
    assert "cannot tell the format from the name" in capsys.readouterr().err


def test_a_keras_or_flax_source_needs_its_architecture(tmp_path, capsys):
    path = tmp_path / "a.msgpack"
    path.write_bytes(b"")
    assert port.main(["convert", str(path), str(tmp_path / "b.onnx")]) == port.EXIT_REFUSED
    assert "give --layers and --direction" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        port.main(["convert", str(path), str(tmp_path / "b.onnx"), "--layers", "2"])


@needs("torch")
def test_a_file_that_is_not_a_state_dict_is_refused_by_name(tmp_path, capsys):
    from safetensors.numpy import save_file

    path = tmp_path / "other.safetensors"
    save_file({"encoder.weight": np.zeros((2, 2), np.float32)}, str(path))
    assert port.main(["convert", str(path), str(tmp_path / "b.onnx")]) == port.EXIT_REFUSED
    assert "not a torch.nn.LSTM state_dict" in capsys.readouterr().err


def test_a_coupled_spec_file_is_refused(tmp_path, capsys):
    params, direction = case_params("coupled")
    path = tmp_path / "coupled.lstm.safetensors"
    save_layer_weights(path, params, direction=direction, coupled_input_forget=True)
    assert port.main(["convert", str(path), str(tmp_path / "b.onnx")]) == port.EXIT_REFUSED
    assert "coupled_input_forget" in capsys.readouterr().err
