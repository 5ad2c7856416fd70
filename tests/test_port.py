"""The porting command (tools/port.py): a round trip through every format, refusals of what a target cannot
hold, and proof that a wrong port is caught (by the read-back, and by running both sides against the spec)."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from contract.runtime import framework_problem
from spec.cases import case_by_name, make_case_data
from spec.params import LayerParams
from spec.weights_file import save_layer_weights
from tests.suite import ROOT, subprocess_environment
from tools import port


@pytest.fixture(autouse=True)
def keras_backend_put_back(monkeypatch):
    """Where the port first imports Keras it asks for the TensorFlow backend (KERAS_BACKEND): in this process, for the
    test's duration only, so that what the session starts afterwards gets the environment it had."""
    monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "tensorflow"))


def needs(*modules: str):
    missing = [m for m in modules if framework_problem(m, "") is not None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} (not installed: pip install "
                              "'lstm-conformance[all]')")


def case_params(name: str) -> tuple[LayerParams, str]:
    data = make_case_data(case_by_name(name), np.float32)
    return data.params, data.layer.direction


def torch_file(tmp_path, name: str):
    """A torch.nn.LSTM state_dict file of a layer case's weights, written by the command itself (spec -> torch)."""
    params, direction = case_params(name)
    spec_path, torch_path = tmp_path / f"{name}.lstm.safetensors", tmp_path / f"{name}.safetensors"
    save_layer_weights(spec_path, params, direction=direction)
    assert port.main(["convert", str(spec_path), str(torch_path)]) == port.EXIT_AGREES
    return torch_path, params


def written(tmp_path, fmt: str, name: str, case: str = "stacked-bidirectional", dtype=np.float32):
    """A file of a layer case's weights in ``fmt``, written by the format's own writer (no proof: no framework
    runs, so that a test of a refusal needs none)."""
    data = make_case_data(case_by_name(case), dtype)
    path = tmp_path / name
    port.FORMATS[fmt].write(path, data.params, port.Architecture.of(data.params, data.layer.direction))
    return path


def refused(capsys, argv, *fragments: str) -> str:
    """The command refuses ``argv`` as a usage error: exit 2, one line on stderr holding every fragment."""
    try:
        status = port.main(argv)
    except SystemExit as error:  # argparse's own usage errors
        status = error.code
    err = capsys.readouterr().err
    assert status == port.EXIT_REFUSED, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("usage:") and not line.startswith(" ")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} missing from: {lines[0]}"
    return lines[0]


def run_command(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.port", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=subprocess_environment(**env))


@needs("torch", "keras", "tensorflow", "flax", "onnx", "onnxruntime")
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


def test_a_projection_into_keras_is_refused_with_the_reason(tmp_path, capsys):
    """Refused before Keras (or torch) is even looked for: the layout's reason is enough."""
    source = written(tmp_path, "torch", "lstmp-padded.safetensors", case="lstmp-padded")
    assert port.main(["convert", str(source), str(tmp_path / "lstmp.weights.h5")]) == port.EXIT_REFUSED
    out = capsys.readouterr().out
    assert "projection 2" in out and "refused: keras cannot hold this LSTM: Keras' LSTM has no projection" in out
    assert not (tmp_path / "lstmp.weights.h5").exists()


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


class PermutingLayout:
    """A layout whose conversions agree with each other but swap gates i and f: its files read back bit for bit, so
    only running them can tell."""

    def __init__(self, layout):
        self.layout = layout

    def to_native(self, params, layer):
        return self.layout.to_native(permuted(params), layer)

    def from_native(self, native, layer):
        return permuted(self.layout.from_native(native, layer))

    def __getattr__(self, name):
        return getattr(self.layout, name)


@needs("torch", "onnxruntime", "onnx")
def test_a_consistent_gate_permutation_reads_back_bit_for_bit_and_is_still_caught(tmp_path, capsys, monkeypatch):
    source, _ = torch_file(tmp_path, "stacked-bidirectional")
    monkeypatch.setattr(port.OnnxFormat, "layout", PermutingLayout(port.OnnxFormat.layout))
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


# ---------------------------------------------------------------------------
# What a port must never do to the user's files, and the sentences a user gets instead of a traceback
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["same-path", "dot-dot", "symlink", "hard-link"])
def test_convert_never_writes_over_its_source(tmp_path, capsys, how):
    source = written(tmp_path, "torch", "lstm.safetensors")
    before = source.read_bytes()
    (tmp_path / "sub").mkdir()
    target = {"same-path": source, "dot-dot": tmp_path / "sub" / ".." / source.name}.get(how, tmp_path / "other.safetensors")
    if how == "symlink":
        target.symlink_to(source)
    elif how == "hard-link":
        os.link(source, target)
    for force in ([], ["--force"]):
        refused(capsys, ["convert", str(source), str(target), *force], "is the source", "proves nothing")
        assert source.read_bytes() == before


@needs("onnx")
def test_an_onnx_model_is_not_cut_down_to_its_lstm_in_place(tmp_path, capsys):
    """An ONNX model whose LSTM feeds a Relu: written over itself, only the LSTM would be left."""
    import onnx
    from onnx import helper

    path = written(tmp_path, "onnx", "m.onnx")
    model = onnx.load(str(path))
    y = model.graph.output[0]
    model.graph.node.append(helper.make_node("Relu", [y.name], [y.name + "_relu"]))
    y.name += "_relu"
    onnx.save(model, str(path))
    before = path.read_bytes()
    refused(capsys, ["convert", str(path), str(path)], "is the source")
    assert path.read_bytes() == before


def test_roundtrip_never_writes_over_its_source(tmp_path, capsys):
    """The last hop of torch -> onnx -> torch in the source's own folder is named hop2-torch.safetensors."""
    source = written(tmp_path, "torch", "hop2-torch.safetensors")
    before = source.read_bytes()
    for force in ([], ["--force"]):
        refused(capsys, ["roundtrip", str(source), "--via", "onnx", "--workdir", str(tmp_path), *force], "hop2-torch.safetensors", "is the source")
        assert source.read_bytes() == before and not (tmp_path / "hop1-onnx.onnx").exists()


def test_an_existing_target_is_written_over_only_with_force(tmp_path, capsys):
    source = written(tmp_path, "spec", "a.lstm.safetensors")
    target = tmp_path / "b.lstm.safetensors"
    target.write_bytes(b"the user's own file")
    refused(capsys, ["convert", str(source), str(target)], str(target), "exists", "--force")
    assert target.read_bytes() == b"the user's own file"
    assert port.main(["convert", str(source), str(target), "--force"]) == port.EXIT_AGREES
    assert port.FORMATS["spec"].read(target, None)[0].tensors().keys() == port.FORMATS["spec"].read(source, None)[0].tensors().keys()
    hops = tmp_path / "hops"
    hops.mkdir()
    (hops / "hop1-spec.lstm.safetensors").write_bytes(b"an earlier run's hop")
    refused(capsys, ["roundtrip", str(source), "--via", "spec", "--workdir", str(hops)], "hop1-spec.lstm.safetensors", "exists", "--force")
    assert (hops / "hop1-spec.lstm.safetensors").read_bytes() == b"an earlier run's hop"
    assert port.main(["roundtrip", str(source), "--via", "spec", "--workdir", str(hops), "--force"]) == port.EXIT_AGREES


def test_a_float64_file_is_refused_before_an_onnx_file_is_written(tmp_path, capsys):
    """ONNX Runtime's LSTM runs float32 only: the ONNX file could not be proven, nor run by its users."""
    source = written(tmp_path, "spec", "f64.lstm.safetensors", dtype=np.float64)
    assert port.main(["convert", str(source), str(tmp_path / "out.onnx")]) == port.EXIT_REFUSED
    out = capsys.readouterr().out
    assert "refused: onnx" in out and "float32 only" in out and "float64" in out, out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f64.lstm.safetensors"]


@pytest.mark.parametrize("existing", [False, True], ids=["new-target", "forced-over-a-file"])
def test_a_port_that_fails_leaves_no_file_behind(tmp_path, capsys, monkeypatch, existing):
    """A failure while writing or proving: no partial target, and a file the user had is still there as it was."""
    source = written(tmp_path, "spec", "a.lstm.safetensors")
    target = tmp_path / "b.lstm.safetensors"
    if existing:
        target.write_bytes(b"the user's own file")

    def failing_proof(*args, **kwargs):
        raise RuntimeError("the proof broke")

    monkeypatch.setattr(port, "prove", failing_proof)
    with pytest.raises(RuntimeError, match="the proof broke"):
        port.main(["convert", str(source), str(target), "--force"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.lstm.safetensors"] + (["b.lstm.safetensors"] if existing else [])
    if existing:
        assert target.read_bytes() == b"the user's own file"


@pytest.mark.parametrize("gates, holds", [(3, "holds a GRU (3 gates"), (1, "holds a plain RNN (1 gate")], ids=["gru", "rnn"])
def test_a_gru_or_rnn_state_dict_is_named_as_such(tmp_path, capsys, gates, holds):
    """torch.nn.GRU and torch.nn.RNN state_dicts have the LSTM's names; only the rows' sizes say how many gates."""
    from safetensors.numpy import save_file

    H, I = 8, 4
    path = tmp_path / "gru.safetensors"
    save_file({"weight_ih_l0": np.zeros((gates * H, I), np.float32), "weight_hh_l0": np.zeros((gates * H, H), np.float32),
               "bias_ih_l0": np.zeros(gates * H, np.float32), "bias_hh_l0": np.zeros(gates * H, np.float32)}, str(path))
    refused(capsys, ["convert", str(path), str(tmp_path / "b.onnx")], str(path), holds, "not an LSTM (4 gates")


@needs("keras", "tensorflow", "h5py")
@pytest.mark.parametrize("layer, holds", [("GRU", "GRU"), ("Dense", "dense")])
def test_a_keras_file_of_other_layers_is_named_as_such(tmp_path, capsys, layer, holds):
    keras = port.FORMATS["keras"].keras()  # imported as the port imports it: on its TensorFlow backend
    model = keras.Sequential([keras.Input((None, 4) if layer == "GRU" else (4,)), getattr(keras.layers, layer)(8)])
    path = tmp_path / "other.weights.h5"
    model.save_weights(str(path))
    refused(capsys, ["convert", str(path), str(tmp_path / "b.onnx"), "--layers", "1", "--direction", "forward"],
            str(path), holds, "not a stack of Keras LSTM layers")


@pytest.mark.parametrize("suffix", [".safetensors", ".weights.h5", ".msgpack", ".onnx", ".lstm.safetensors", ".tflite", ".xml"])
def test_a_target_in_a_missing_directory_is_one_sentence(tmp_path, capsys, suffix):
    source = written(tmp_path, "spec", "a.lstm.safetensors", case="one-layer")
    for folder, why in ((tmp_path / "missing", "does not exist"), (source, "is not a directory")):
        target = folder / f"out{suffix}"
        refused(capsys, ["convert", str(source), str(target)], f"cannot write {target}", str(folder), why)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.lstm.safetensors"]


def test_layers_must_be_at_least_one(tmp_path, capsys):
    refused(capsys, ["convert", str(tmp_path / "a.weights.h5"), str(tmp_path / "b.onnx"), "--layers", "0", "--direction", "forward"],
            "--layers", ">= 1")


@pytest.mark.parametrize("fmt, name", [("torch", "a.safetensors"), ("spec", "a.lstm.safetensors")])
def test_layers_and_direction_that_contradict_the_file_are_refused(tmp_path, capsys, fmt, name):
    """A torch or spec file says its own architecture (2 bidirectional layers here): --layers and --direction
    may only repeat it."""
    source = written(tmp_path, fmt, name)
    refused(capsys, ["convert", str(source), str(tmp_path / "b.lstm.safetensors"), "--layers", "3", "--direction", "bidirectional"],
            str(source), "2 layer(s), bidirectional", "--layers 3 --direction bidirectional")
    assert not (tmp_path / "b.lstm.safetensors").exists()


def write_torch_zip(path):
    """The layout torch.save writes (a zip archive holding a pickle), without torch."""
    import pickle
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("lstm/data.pkl", pickle.dumps({"weight_ih_l0": [0.5]}))


def write_onnx(path):
    port.FORMATS["onnx"].write(path, *_stack())


@pytest.mark.parametrize(
    "make, name, options, fragments",
    [
        (write_torch_zip, "lstm.safetensors", [], ("is a zip archive", "torch.save", "not a safetensors file", "nothing is unpickled")),
        pytest.param(write_onnx, "lstm.safetensors", [], ("is an ONNX model", "not a safetensors file", "--from onnx"), marks=needs("onnx")),
        pytest.param(write_onnx, "lstm.onnx", ["--from", "torch"], ("is an ONNX model", "not a safetensors file"), marks=needs("onnx")),
        (lambda path: port.FORMATS["torch"].write(path, *_stack()), "lstm.onnx", [], ("is a safetensors file", "not an ONNX model", "--from torch")),
    ],
    ids=["torch-save-zip", "onnx-named-safetensors", "onnx-from-torch", "safetensors-named-onnx"],
)
def test_a_file_of_another_format_is_named_as_such(tmp_path, capsys, make, name, options, fragments):
    path = tmp_path / name
    make(path)
    refused(capsys, ["convert", str(path), str(tmp_path / "b.lstm.safetensors"), *options], str(path), *fragments)


def _stack():
    data = make_case_data(case_by_name("stacked-bidirectional"), np.float32)
    return data.params, port.Architecture.of(data.params, data.layer.direction)


@pytest.mark.parametrize("via", ["", " ", "onnx,,flax", "onnx,"])
def test_an_empty_via_is_a_usage_error(tmp_path, capsys, via):
    source = written(tmp_path, "spec", "a.lstm.safetensors")
    refused(capsys, ["roundtrip", str(source), "--via", via, "--workdir", str(tmp_path / "hops")], "--via", "empty")
    assert not (tmp_path / "hops").exists()


def test_a_workdir_that_is_a_file_is_named(tmp_path, capsys):
    source = written(tmp_path, "spec", "a.lstm.safetensors")
    refused(capsys, ["roundtrip", str(source), "--via", "spec", "--workdir", str(source)], f"--workdir {source} is a file, not a directory")
    refused(capsys, ["roundtrip", str(source), "--via", "spec", "--workdir", str(source / "hops")], f"cannot make --workdir {source / 'hops'}")


def test_a_target_that_is_a_directory_is_refused_even_with_force(tmp_path, capsys):
    source = written(tmp_path, "spec", "a.lstm.safetensors")
    (tmp_path / "b.onnx").mkdir()
    refused(capsys, ["convert", str(source), str(tmp_path / "b.onnx"), "--force"], f"{tmp_path / 'b.onnx'} is a directory")


def test_a_state_dict_read_as_a_spec_file_names_the_missing_metadata(tmp_path, capsys):
    source = written(tmp_path, "torch", "lstm.safetensors")
    refused(capsys, ["convert", str(source), str(tmp_path / "b.onnx"), "--from", "spec"], str(source), "metadata 'format'")


def test_refusals_need_no_framework(tmp_path):
    """In an environment with none of the frameworks (tox -e spec), the refusals still come as sentences."""
    source = written(tmp_path, "spec", "a.lstm.safetensors")
    (tmp_path / "a.msgpack").write_bytes(b"")
    code = (
        "import sys\n"
        "for m in ('torch', 'tensorflow', 'keras', 'jax', 'flax', 'onnxruntime', 'h5py'): sys.modules[m] = None\n"
        "from tools import port\n"
        f"assert port.main(['convert', {str(tmp_path / 'a.msgpack')!r}, {str(tmp_path / 'b.onnx')!r}]) == 2\n"
        f"assert port.main(['convert', {str(source)!r}, {str(source)!r}]) == 2\n"
        f"assert port.main(['roundtrip', {str(source)!r}, '--via', '']) == 2\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, env=subprocess_environment())
    assert done.returncode == 0, done.stderr[-3000:]
    assert "give --layers and --direction" in done.stderr and "is the source" in done.stderr, done.stderr


def test_importing_the_port_sets_no_environment_variable():
    """Keras reads KERAS_BACKEND at its first import: the port asks for its TensorFlow backend only where it first needs
    Keras, never at its own import (a program that imports tools.port keeps its environment, and its Keras)."""
    code = ("import os\nbefore = dict(os.environ)\nimport tools.port\n"
            "changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))\n"
            "assert not changed, changed\n")
    unset = {k: v for k, v in subprocess_environment().items() if k not in ("KERAS_BACKEND", "JAX_ENABLE_X64")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, env=unset)
    assert done.returncode == 0, done.stderr[-3000:]


@needs("keras", "jax")
def test_keras_on_another_backend_is_refused_before_a_file_is_written(tmp_path):
    """A Keras file is written and run on Keras' TensorFlow backend: a process whose KERAS_BACKEND says otherwise gets
    one sentence naming the backend and the fix, and no file."""
    source = written(tmp_path, "spec", "a.lstm.safetensors", case="one-layer")
    done = run_command("convert", str(source), str(tmp_path / "a.weights.h5"), KERAS_BACKEND="jax")
    assert done.returncode == port.EXIT_REFUSED, done.stdout + done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Keras' backend is 'jax' in this process" in errors[0], done.stderr[-3000:]
    assert "KERAS_BACKEND=tensorflow" in errors[0] and str(tmp_path / "a.weights.h5") in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.lstm.safetensors"]


# ---------------------------------------------------------------------------
# Malformed sources of the kinds users have: each named, with the file and the tensor, never a traceback
# ---------------------------------------------------------------------------


def torch_state(H=8, I=4, **changes):
    """A one-layer torch.nn.LSTM state_dict (NumPy), with tensors replaced (an array) or removed (None)."""
    state = {"weight_ih_l0": np.zeros((4 * H, I), np.float32), "weight_hh_l0": np.zeros((4 * H, H), np.float32),
             "bias_ih_l0": np.zeros(4 * H, np.float32), "bias_hh_l0": np.zeros(4 * H, np.float32)}
    state.update(changes)
    return {name: tensor for name, tensor in state.items() if tensor is not None}


@pytest.mark.parametrize(
    "state, fragments",
    [
        (torch_state(weight_hh_l0=None), ("missing ['weight_hh_l0']",)),
        (torch_state(weight_ih_l2=np.zeros((32, 8), np.float32)), ("3 layer(s)", "missing ['bias_hh_l1'",)),
        (torch_state(extra=np.zeros(2, np.float32)), ("unexpected tensor(s) ['extra']",)),
        (torch_state(bias_hh_l0=np.zeros(7, np.float32)), ("bias_hh_l0: wrong shape: expected (32,), got (7,)",)),
        ({k: v.astype(np.float16) for k, v in torch_state().items()}, ("float16", "casts nothing")),
    ],
    ids=["missing-tensor", "missing-layer", "extra-tensor", "wrong-shape", "float16"],
)
def test_a_broken_state_dict_is_named_by_tensor(tmp_path, capsys, state, fragments):
    from safetensors.numpy import save_file

    path = tmp_path / "lstm.safetensors"
    save_file(state, str(path))
    refused(capsys, ["convert", str(path), str(tmp_path / "b.lstm.safetensors")], str(path), *fragments)


def test_a_truncated_safetensors_file_is_named(tmp_path, capsys):
    source = written(tmp_path, "torch", "lstm.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(source.read_bytes()[:-100])
    refused(capsys, ["convert", str(cut), str(tmp_path / "b.lstm.safetensors")], str(cut), "not a readable safetensors file")


@pytest.mark.parametrize("name, options", [("e.safetensors", []), ("e.lstm.safetensors", []), ("e.onnx", []),
                                           ("e.weights.h5", ["--layers", "1", "--direction", "forward"]),
                                           ("e.msgpack", ["--layers", "1", "--direction", "forward"])])
def test_an_empty_source_is_named(tmp_path, capsys, name, options):
    path = tmp_path / name
    path.write_bytes(b"")
    refused(capsys, ["convert", str(path), str(tmp_path / "b.lstm.safetensors"), *options], f"{path} is empty (0 bytes)")


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_source_that_is_not_a_regular_file_is_named_without_waiting(tmp_path, capsys, kind):
    path = tmp_path / "lstm.safetensors"
    if kind == "directory":
        path.mkdir()
    elif hasattr(os, "mkfifo"):
        os.mkfifo(path)  # opening it would wait for a writer
    else:
        pytest.skip("no FIFOs on this system")
    refused(capsys, ["convert", str(path), str(tmp_path / "b.lstm.safetensors")], str(path), "a directory" if kind == "directory" else "not a regular file")


@pytest.mark.parametrize("fmt", ["keras", "flax", "onnx"])
def test_a_safetensors_file_read_as_another_format_is_named(tmp_path, capsys, fmt):
    source = written(tmp_path, "torch", "lstm.safetensors")
    refused(capsys, ["convert", str(source), str(tmp_path / "b.lstm.safetensors"), "--from", fmt, "--layers", "2", "--direction", "bidirectional"],
            str(source), "is a safetensors file", "--from torch")


@pytest.mark.parametrize("name, to", [("out.safetensors", "keras"), ("out.safetensors", "onnx"), ("out.lstm.safetensors", "torch"), ("out.h5", "keras")])
def test_a_target_name_that_says_another_format_than_to_is_refused(tmp_path, capsys, name, to):
    """Keras refuses any name but .weights.h5; the others would write a file whose name misleads its next reader."""
    source = written(tmp_path, "spec", "a.lstm.safetensors")
    refused(capsys, ["convert", str(source), str(tmp_path / name), "--to", to], str(tmp_path / name))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.lstm.safetensors"]


@needs("torch")
def test_a_state_dict_without_biases_ports(tmp_path, capsys):
    """torch.nn.LSTM(bias=False) saves no bias tensors: the canonical b is zero, and the proof builds its module so."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    state = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in torch_state(bias_ih_l0=None, bias_hh_l0=None).items()}
    path = tmp_path / "nobias.safetensors"
    save_file(state, str(path))
    assert port.main(["convert", str(path), str(tmp_path / "b.lstm.safetensors")]) == port.EXIT_AGREES, capsys.readouterr()
    assert not port.FORMATS["spec"].read(tmp_path / "b.lstm.safetensors", None)[0].cells[0].b.any()


@needs("flax")
def test_a_flax_file_of_another_architecture_is_named(tmp_path, capsys):
    source = written(tmp_path, "flax", "lstm.msgpack")  # 2 bidirectional layers
    refused(capsys, ["convert", str(source), str(tmp_path / "b.lstm.safetensors"), "--layers", "1", "--direction", "forward"],
            str(source), "['layers_0', 'layers_1']", "--layers 1 --direction forward")
    refused(capsys, ["convert", str(source), str(tmp_path / "b.lstm.safetensors"), "--layers", "2", "--direction", "forward"],
            str(source), "layers_0 is a bidirectional layer")


@needs("keras", "tensorflow", "h5py")
def test_a_keras_file_of_another_architecture_is_named(tmp_path, capsys):
    source = written(tmp_path, "keras", "lstm.weights.h5")  # 2 bidirectional layers
    refused(capsys, ["convert", str(source), str(tmp_path / "b.lstm.safetensors"), "--layers", "1", "--direction", "forward"],
            str(source), "holds 2 bidirectional LSTM layer(s)", "--layers 1 --direction forward")


# ---------------------------------------------------------------------------
# Deployment formats: LiteRT's fused LSTM (.tflite) and OpenVINO's IR (.xml + .bin)
# ---------------------------------------------------------------------------


def layer_norm_params() -> LayerParams:
    """One forward layer with layer normalization and nothing else: every other format's refusal is its LN reason."""
    params, _ = case_params("one-layer")
    rng = np.random.default_rng(5)
    cells = tuple(dataclasses.replace(c, ln=rng.uniform(0.5, 1.5, c.b.shape).astype(c.b.dtype)) for c in params.cells)
    return LayerParams(cells, params.num_directions)


def spec_file(tmp_path, name: str, params: LayerParams, direction: str = "forward"):
    path = tmp_path / name
    save_layer_weights(path, params, direction=direction)
    return path


def tflite_bytes(params: LayerParams, direction: str, **config) -> bytes:
    """A LiteRT model of ``params`` as the port builds it, with options (cell_clip=...) the port never writes."""
    from backends.layouts.tflite import FUSED_OPS
    from backends.runtimes.litert import layer_model

    layer = dataclasses.replace(port.Architecture.of(params, direction).config(), **config)
    return layer_model(FUSED_OPS.to_native(params, layer), layer, input_size=params.input_size, hidden_size=params.hidden_size,
                       output_size=params.output_size, T=7, B=3)


@needs("ai_edge_litert", "flatbuffers")
@pytest.mark.parametrize("case", ["layer-norm-full", "stacked-bidirectional"])
def test_spec_to_tflite_and_back_is_bit_for_bit(tmp_path, capsys, case):
    """layer-norm-full: two layers of projection with its bias, layer normalization and peepholes, which only TFLite holds."""
    params, direction = case_params(case)  # the weights alone: a case's clips are run-time settings, in no file
    source = spec_file(tmp_path, f"{case}.lstm.safetensors", params, direction)
    assert port.main(["roundtrip", str(source), "--via", "tflite", "--workdir", str(tmp_path / "hops")]) == port.EXIT_AGREES
    out = capsys.readouterr().out
    assert out.count("read back: the same parameters, bit for bit") == 2 and out.count(": agrees") == 6, out
    assert "round trip spec -> tflite -> spec: the same parameters as the start, bit for bit" in out
    if case == "layer-norm-full":
        assert "projection 3 with its bias, peepholes, layer normalization" in out, out
    assert "for batch size 3" in out
    assert sorted(p.name for p in (tmp_path / "hops").iterdir()) == ["hop1-tflite.tflite", "hop2-spec.lstm.safetensors"]


@needs("torch", "ai_edge_litert", "flatbuffers")
def test_torch_to_tflite_is_proven_and_keeps_its_batch_size(tmp_path, capsys):
    source, _ = torch_file(tmp_path, "stacked-bidirectional")
    capsys.readouterr()
    target = tmp_path / "lstm.tflite"
    assert port.main(["convert", str(source), str(target), "--batch", "2"]) == port.EXIT_AGREES
    out = capsys.readouterr().out
    assert "for batch size 2" in out and out.count(": agrees") == 3, out
    assert port.FORMATS["tflite"].batch_size(target) == 2
    # a tflite source's batch size is the proof's, and a --batch that contradicts it is refused
    assert port.main(["convert", str(target), str(tmp_path / "again.tflite")]) == port.EXIT_AGREES
    assert port.FORMATS["tflite"].batch_size(tmp_path / "again.tflite") == 2
    refused(capsys, ["convert", str(target), str(tmp_path / "b.lstm.safetensors"), "--batch", "4"], "batch size 2", "--batch says 4")
    refused(capsys, ["convert", str(source), str(tmp_path / "b.onnx"), "--batch", "4"], "--batch", "leave --batch out")


@needs("ai_edge_litert", "flatbuffers")
def test_a_single_fused_op_from_elsewhere_reads_as_one_forward_layer(tmp_path, capsys):
    """Tensors named as another tool names them: the op's inputs by position."""
    import flatbuffers

    from backends.runtimes.litert import read_model

    params, direction = case_params("one-layer")
    model = read_model(tflite_bytes(params, direction))
    for k, tensor in enumerate(model.subgraphs[0].tensors):
        tensor.name = f"StatefulPartitionedCall:{k}".encode()
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = tmp_path / "other.tflite"
    path.write_bytes(bytes(builder.Output()))
    assert port.main(["convert", str(path), str(tmp_path / "b.lstm.safetensors")]) == port.EXIT_AGREES
    out = capsys.readouterr().out
    assert "1 layer(s), forward" in out and "read back: the same parameters, bit for bit" in out, out
    assert not port._same(params, port.FORMATS["spec"].read(tmp_path / "b.lstm.safetensors", None)[0])


@needs("openvino", "onnx")
def test_spec_to_openvino_and_back_is_bit_for_bit(tmp_path, capsys):
    params, direction = case_params("stacked-bidirectional")
    source = spec_file(tmp_path, "a.lstm.safetensors", params, direction)
    assert port.main(["roundtrip", str(source), "--via", "openvino", "--workdir", str(tmp_path / "hops")]) == port.EXIT_AGREES
    out = capsys.readouterr().out
    assert out.count("read back: the same parameters, bit for bit") == 2 and out.count(": agrees") == 6, out
    assert "compress_to_fp16=False" in out
    assert sorted(p.name for p in (tmp_path / "hops").iterdir()) == ["hop1-openvino.bin", "hop1-openvino.xml", "hop2-spec.lstm.safetensors"]


@needs("torch", "openvino", "onnx", "ai_edge_litert", "flatbuffers")
def test_torch_through_openvino_and_tflite_and_back(tmp_path):
    source, _ = torch_file(tmp_path, "stacked-bidirectional")
    done = run_command("roundtrip", str(source), "--via", "openvino,tflite", "--workdir", str(tmp_path / "hops"))
    output = done.stdout + done.stderr[-3000:]
    assert done.returncode == port.EXIT_AGREES, output
    assert done.stdout.count(": agrees") == 9 and "DISAGREES" not in done.stdout, output
    assert "round trip torch -> openvino -> tflite -> torch: the same parameters as the start, bit for bit" in done.stdout


def test_float64_is_refused_before_a_tflite_or_openvino_file_is_written(tmp_path, capsys):
    source = written(tmp_path, "spec", "f64.lstm.safetensors", dtype=np.float64)
    for target, says in (("out.tflite", "refused: tflite"), ("out.xml", "refused: openvino")):
        assert port.main(["convert", str(source), str(tmp_path / target)]) == port.EXIT_REFUSED
        out = capsys.readouterr().out
        assert says in out and "float64" in out and "casts nothing" in out, out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f64.lstm.safetensors"]


@pytest.mark.parametrize("case, says", [("bidirectional", "no peepholes"), ("coupled", "coupled")])
def test_peepholes_or_coupled_gates_into_openvino_are_refused(tmp_path, capsys, case, says):
    """OpenVINO's ONNX frontend drops P and input_forget without a word: the IR would compute another LSTM."""
    params, direction = case_params(case)
    if case == "coupled":  # the port reads no coupled file (spec, ONNX, TFLite refuse it): the layout's own refusal
        params = LayerParams(tuple(dataclasses.replace(c, p=None) for c in params.cells), params.num_directions)
        config = dataclasses.replace(port.Architecture.of(params, direction).config(), coupled_input_forget=True)
        with pytest.raises(port.NotSupported, match="no coupled gates .* without a word"):
            port.FORMATS["openvino"].layout.to_native(params, config)
        return
    source = spec_file(tmp_path, "a.lstm.safetensors", params, direction)
    assert port.main(["convert", str(source), str(tmp_path / "out.xml")]) == port.EXIT_REFUSED
    out = capsys.readouterr().out
    assert "refused: openvino cannot hold this LSTM" in out and says in out and "without a word" in out, out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.lstm.safetensors"]


@pytest.mark.parametrize("target, says", [("out.safetensors", "torch.nn.LSTM has no layer normalization"),
                                          ("out.weights.h5", "Keras' LSTM has no layer normalization"),
                                          ("out.onnx", "ONNX's LSTM operator has no layer normalization"),
                                          ("out.msgpack", "flax's LSTM cells have no layer normalization"),
                                          ("out.xml", "OpenVINO's LSTMSequence has no layer normalization")])
def test_layer_norm_is_refused_by_every_format_but_tflite_with_its_layouts_reason(tmp_path, capsys, target, says):
    source = spec_file(tmp_path, "ln.lstm.safetensors", layer_norm_params())
    assert port.main(["convert", str(source), str(tmp_path / target)]) == port.EXIT_REFUSED
    out = capsys.readouterr().out
    assert "layer normalization" in out.splitlines()[0] and f"cannot hold this LSTM: {says}" in out, out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ln.lstm.safetensors"]


def test_a_projection_bias_is_refused_by_torch_with_its_layouts_reason(tmp_path, capsys):
    params, direction = case_params("proj-bias")
    source = spec_file(tmp_path, "pb.lstm.safetensors", params, direction)
    assert port.main(["convert", str(source), str(tmp_path / "out.safetensors")]) == port.EXIT_REFUSED
    assert "torch.nn.LSTM projects without a bias" in capsys.readouterr().out


def _tflite_of(tmp_path, name="a.tflite", case="stacked-bidirectional", **config):
    params, direction = case_params(case)
    path = tmp_path / name
    path.write_bytes(tflite_bytes(params, direction, **config))
    return path


def _repacked(content: bytes, change) -> bytes:
    import flatbuffers

    from backends.runtimes.litert import read_model

    model = read_model(content)
    change(model)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _op_version_2(model):
    from backends.runtimes.litert import schema

    for code in model.operatorCodes:
        if code.builtinCode == schema().BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM:
            code.version = 2


def _int8_weights(model):
    from backends.runtimes.litert import schema

    graph = model.subgraphs[0]
    tensor = next(t for t in graph.tensors if t.name.endswith(b"input_to_forget_weights"))
    tensor.type = schema().TensorType.INT8
    model.buffers[tensor.buffer].data = np.zeros(int(np.prod(tensor.shape)), np.uint8)


def _input_out_of_range(model):
    op = model.subgraphs[0].operators[0]
    inputs = np.array(op.inputs)  # the object API's arrays are read-only views of the buffer
    inputs[1] = 10**6
    op.inputs = inputs


def _write_input_out_of_range(path):
    path.write_bytes(_repacked(tflite_bytes(*case_params("stacked-bidirectional")), _input_out_of_range))


def _write_truncated(path):
    path.write_bytes(tflite_bytes(*case_params("stacked-bidirectional"))[:-4000])


def _write_onnx_as_tflite(path):
    port.FORMATS["onnx"].write(path, *_stack())


def _write_safetensors_as_tflite(path):
    port.FORMATS["torch"].write(path, *_stack())


def _write_version_2(path):
    path.write_bytes(_repacked(tflite_bytes(*case_params("stacked-bidirectional")), _op_version_2))


def _write_int8(path):
    path.write_bytes(_repacked(tflite_bytes(*case_params("stacked-bidirectional")), _int8_weights))


def _write_clipped(path):
    params, direction = case_params("proj-bias")
    path.write_bytes(tflite_bytes(params, direction, cell_clip=1.0, proj_clip=0.5))


def _write_cifg(path):
    from backends.layouts.tflite import FUSED_OPS
    from backends.runtimes.litert import layer_model

    params, direction = case_params("coupled")
    layer = dataclasses.replace(port.Architecture.of(params, direction).config(), coupled_input_forget=True)
    path.write_bytes(layer_model(FUSED_OPS.to_native(params, layer), layer, input_size=params.input_size,
                                 hidden_size=params.hidden_size, output_size=params.output_size, T=7, B=3))


@needs("ai_edge_litert", "flatbuffers")
@pytest.mark.parametrize(
    "make, fragments",
    [
        (_write_truncated, ("a truncated or corrupt TFLite flatbuffer",)),
        pytest.param(_write_onnx_as_tflite, ("is an ONNX model", "not a LiteRT (TFLite) model", "--from onnx"), marks=needs("onnx")),
        (_write_safetensors_as_tflite, ("is a safetensors file", "not a LiteRT (TFLite) model", "--from torch")),
        (_write_version_2, ("UNIDIRECTIONAL_SEQUENCE_LSTM version 2", "knows version 1 (float32)")),
        (_write_int8, ("input_to_forget_weights", "INT8", "quantized model")),
        (_write_clipped, ("cell_clip=1", "proj_clip=0.5", "run-time settings")),
        (_write_cifg, ("CIFG", "coupled", "only ONNX (input_forget) and TFLite")),
        (_write_input_out_of_range, ("names input tensor 1000000, of",)),
    ],
    ids=["truncated", "onnx-named-tflite", "safetensors-named-tflite", "op-version-2", "int8-weights", "clipped", "cifg",
         "tensor-index-out-of-range"],
)
def test_a_tflite_source_that_cannot_be_ported_is_named(tmp_path, capsys, make, fragments):
    path = tmp_path / "lstm.tflite"
    make(path)
    refused(capsys, ["convert", str(path), str(tmp_path / "b.lstm.safetensors")], str(path), *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lstm.tflite"]


@needs("ai_edge_litert", "flatbuffers", "tensorflow", "keras")
def test_a_keras_3_lstm_converted_to_tflite_is_named_by_its_while_loop(tmp_path, capsys):
    """TFLiteConverter makes a WHILE loop of Keras 3's LSTM, not the fused op: its operators are named."""
    keras = port.FORMATS["keras"].keras()
    import tensorflow as tf

    model = keras.Sequential([keras.Input((5, 3), batch_size=1), keras.layers.LSTM(4)])
    path = tmp_path / "keras.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    refused(capsys, ["convert", str(path), str(tmp_path / "b.lstm.safetensors")], str(path),
            "no UNIDIRECTIONAL_SEQUENCE_LSTM operator", "WHILE", "Keras 3's LSTM")


def _ir(tmp_path, name="a.xml"):
    """An IR the port wrote (spec -> openvino), proven."""
    source = written(tmp_path, "spec", "ir-source.lstm.safetensors")
    assert port.main(["convert", str(source), str(tmp_path / name)]) == port.EXIT_AGREES
    return tmp_path / name


@needs("openvino", "onnx")
@pytest.mark.parametrize("damage, fragments", [
    ("truncated-bin", ("(with a.bin)", "OpenVINO cannot read it as an IR", "Incorrect weights in bin file")),
    ("missing-bin", ("its weights file", "a.bin is missing")),
    ("not-ir-xml", ("OpenVINO cannot read it as an IR", "Unable to read the model")),
    ("onnx-named-xml", ("is an ONNX model", "not an OpenVINO IR", "--from onnx")),
    pytest.param("tflite-named-xml", ("not an XML file", "TFL3"), marks=needs("ai_edge_litert", "flatbuffers")),
])
def test_an_ir_that_cannot_be_read_is_named(tmp_path, capsys, damage, fragments):
    xml = _ir(tmp_path)
    capsys.readouterr()
    weights = xml.with_suffix(".bin")
    if damage == "truncated-bin":
        weights.write_bytes(weights.read_bytes()[:-40])
    elif damage == "missing-bin":
        weights.unlink()
    elif damage == "not-ir-xml":
        xml.write_text("<?xml version='1.0'?>\n<html><body>not a network</body></html>\n")
    elif damage == "onnx-named-xml":
        port.FORMATS["onnx"].write(xml, *_stack())
    else:
        xml.write_bytes(tflite_bytes(*case_params("one-layer")))
    line = refused(capsys, ["convert", str(xml), str(tmp_path / "b.lstm.safetensors")], str(xml), *fragments)
    assert "Exception from" not in line and ".cpp:" not in line, line


@pytest.mark.parametrize("target", ["b.tflite", "b.xml"])
@pytest.mark.parametrize("existing", [False, True], ids=["new-target", "forced-over-a-file"])
def test_a_deployment_port_that_fails_leaves_no_file_behind(tmp_path, capsys, monkeypatch, target, existing):
    fmt = port.named_format(tmp_path / target)
    missing = [m for m in fmt.modules if port.framework_problem(m, "") is not None]
    if missing:
        pytest.skip(f"the {fmt.name} format is written and proven with {', '.join(missing)}, not installed here "
                    f"(pip install 'lstm-conformance[{ {'tflite': 'litert'}.get(fmt.name, fmt.name)}]')")
    source = written(tmp_path, "spec", "a.lstm.safetensors")
    before = sorted(p.name for p in tmp_path.iterdir())
    kept = [tmp_path / target, *fmt.companions(tmp_path / target)] if existing else []
    for path in kept:
        path.write_bytes(b"the user's own file")

    def failing_proof(*args, **kwargs):
        raise RuntimeError("the proof broke")

    monkeypatch.setattr(port, "prove", failing_proof)
    with pytest.raises(RuntimeError, match="the proof broke"):
        port.main(["convert", str(source), str(tmp_path / target), "--force"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before + [p.name for p in kept])
    for path in kept:
        assert path.read_bytes() == b"the user's own file"


@needs("openvino", "onnx")
def test_an_ir_whose_bin_exists_is_written_over_only_with_force(tmp_path, capsys):
    source = written(tmp_path, "spec", "a.lstm.safetensors")
    (tmp_path / "b.bin").write_bytes(b"the user's own weights")
    refused(capsys, ["convert", str(source), str(tmp_path / "b.xml")], "b.bin", "exists", "--force")
    assert (tmp_path / "b.bin").read_bytes() == b"the user's own weights" and not (tmp_path / "b.xml").exists()
    weights_named_bin = tmp_path / "lstm.bin"
    weights_named_bin.write_bytes(source.read_bytes())
    for force in ([], ["--force"]):  # the IR's .bin would be written over the source
        refused(capsys, ["convert", str(weights_named_bin), str(tmp_path / "lstm.xml"), "--from", "spec", *force],
                "lstm.bin", "is the source")
    assert weights_named_bin.read_bytes() == source.read_bytes()


def test_the_openvino_layout_round_trips_every_case_it_holds_exactly():
    """backends/layouts/openvino.py (NumPy only, no row runs it): to_native then from_native gives the parameters back,
    the forget bias folded into b_f; what it cannot hold is refused in OpenVINO's words."""
    from contract.layout import fold_forget_bias
    from spec.cases import CASES

    layout = port.FORMATS["openvino"].layout
    held = [case for case in CASES if layout.refusal(case.layer) is None]
    assert {"stacked-bidirectional", "reverse-standard", "forget-bias"} <= {case.name for case in held}
    for case in held:
        for dtype in (np.float32, np.float64):
            params = make_case_data(case, dtype).params
            back = layout.from_native(layout.to_native(params, case.layer), case.layer).tensors()
            for name, value in params.tensors().items():
                want = fold_forget_bias(value, case.layer.forget_bias) if name.endswith(" b") else value
                assert back[name].dtype == want.dtype and np.array_equal(back[name], want), f"{case.name} {dtype}: {name}"
    refused_cases = {case.name: layout.refusal(case.layer) for case in CASES if layout.refusal(case.layer)}
    assert any("no peepholes" in reason for reason in refused_cases.values())
