"""The layer spec against TensorFlow 1's LSTMCell under dynamic_rnn / bidirectional_dynamic_rnn, float64,
forward and gradients (tf.gradients in graph mode).

TF1's cell is the one framework LSTM with every feature of TF's family: peepholes, a forget bias,
cell_clip (the cell state clipped right after its update), num_proj and proj_clip (LSTMP), and
dynamic_rnn's sequence_length, which copies the state through a row's padding (so a row of length 0 keeps
its initial state: the spec's rule (13)). Each layer of a stack is one (bidirectional_)dynamic_rnn call on
the previous one's outputs, concatenated in the graph (forward first).

It needs tf-keras beside TensorFlow (``pip install --no-deps tf-keras==<TensorFlow's version>``: with its
dependencies pip would replace tensorflow-cpu by tensorflow) and TF_USE_LEGACY_KERAS=1 before TensorFlow
is first imported, so it runs in a subprocess of its own; the test is skipped where tf-keras is missing.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from backends.layouts import tf1 as tf1_layout
from spec.params import LayerParams
from tests.spec.test_layer_references import TORCH_ATOL, TORCH_RTOL, compare, gradient_entries, layer_data

TF1_HINT = ("TF1's LSTMCell is the reference for proj_clip and lengths of 0; pip install --no-deps "
            "tf-keras==<your TensorFlow's version> (and tensorflow-cpu)")
#: Single layers with each clip, a bidirectional layer with lengths 0, 1 and T, and two stacks of everything TF1 has.
TF1_CASES = ("proj-clip", "cell-clip", "lengths", "lstmp-stack", "medium-combined")
ROOT = Path(__file__).resolve().parents[2]


def tf1_available() -> bool:
    return importlib.util.find_spec("tf_keras") is not None and importlib.util.find_spec("tensorflow") is not None


def skip_without_tf1() -> None:
    if not tf1_available():
        pytest.skip(TF1_HINT)


def below_cell(variable, cell_name: str) -> str:
    """A TF1 cell variable's name below its cell's scope ('kernel', 'bias', 'w_i_diag', 'projection/kernel'): where
    the TF1 layout (backends/layouts/tf1.py) keeps it under any scope."""
    return variable.name.rsplit(f"/{cell_name}/", 1)[1].removesuffix(":0")


def _run_in_tf1(names: list[str], folder: str) -> None:
    """In the subprocess: every case's outputs and gradients, saved to folder/<name>.npz."""
    for name in names:
        _run_case_in_tf1(name, os.path.join(folder, f"{name}.npz"))


def _run_case_in_tf1(name: str, out: str) -> None:
    """Build the graph for case ``name``, load the weights, run, save outputs and gradients."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    data = layer_data(name)
    case, config = data.case, data.layer
    H, D = case.H, case.D
    graph = tf.Graph()
    with graph.as_default():
        x = tf.constant(data.x)
        h0, c0 = tf.constant(data.h0), tf.constant(data.c0)
        lengths = None if data.lengths is None else tf.constant(data.lengths.astype(np.int32))
        layer_input, ys, states, cells, names = x, [], [], [], []
        for l in range(case.L):
            made = [tf1.nn.rnn_cell.LSTMCell(H, use_peepholes=config.peephole, cell_clip=config.cell_clip,
                                             num_proj=config.proj_size, proj_clip=config.proj_clip,
                                             forget_bias=config.forget_bias, dtype=tf.float64, name=f"l{l}d{d}")
                    for d in range(D)]
            cells += made
            names += [f"l{l}d{d}" for d in range(D)]
            initial = [tf1.nn.rnn_cell.LSTMStateTuple(c0[l * D + d], h0[l * D + d]) for d in range(D)]
            if config.direction == "bidirectional":
                outputs, finals = tf1.nn.bidirectional_dynamic_rnn(
                    made[0], made[1], layer_input, sequence_length=lengths, initial_state_fw=initial[0],
                    initial_state_bw=initial[1], time_major=True, scope=f"layer{l}")
                ys, layer_states = list(outputs), list(finals)
            else:
                assert config.direction == "forward", f"{name}: TF1's reverse is bidirectional_dynamic_rnn's backward cell"
                y, final = tf1.nn.dynamic_rnn(made[0], layer_input, sequence_length=lengths, initial_state=initial[0],
                                              time_major=True, scope=f"layer{l}")
                ys, layer_states = [y], [final]
            states += layer_states
            layer_input = tf.concat(ys, axis=2)
        y = layer_input
        h_T = tf.stack([s.h for s in states])
        c_T = tf.stack([s.c for s in states])
        loss = tf.reduce_sum(y * data.dy) + tf.reduce_sum(h_T * data.dh_T) + tf.reduce_sum(c_T * data.dc_T)
        variables = [v for cell in cells for v in cell.variables]
        gradients = tf.gradients(loss, [x, h0, c0] + variables)
        assigns = []
        for k, cell in enumerate(cells):  # the weights in TF1's layout, under a scope "cell" of our own
            native = tf1_layout.cell_to_native(data.params.cells[k], "cell")
            assigns += [v.assign(native[f"cell/{below_cell(v, names[k])}"]) for v in cell.variables]
        with tf1.Session(graph=graph) as session:
            session.run(assigns)
            values = session.run({"y": y, "h_T": h_T, "c_T": c_T, "gradients": gradients})
    native_gradients = iter(values["gradients"][3:])
    gradient_cells = []
    for k, cell in enumerate(cells):  # read back through the layout: it only moves entries, and has no forget bias
        native = {f"cell/{below_cell(v, names[k])}": next(native_gradients) for v in cell.variables}
        gradient_cells.append(tf1_layout.cell_from_native(native, "cell", peephole=config.peephole,
                                                          projection=config.proj_size is not None, forget_bias=0.0))
    result = {"y": values["y"], "h_T": values["h_T"], "c_T": values["c_T"],
              **gradient_entries(*values["gradients"][:3], LayerParams(tuple(gradient_cells), D))}
    np.savez(out, **{k: np.ascontiguousarray(v) for k, v in result.items()})


@functools.cache
def tf1_references() -> dict[str, dict[str, np.ndarray]]:
    """TF1's outputs and gradients for every case of TF1_CASES, computed in one subprocess (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
        code = f"from tests.spec.test_layer_tf1 import _run_in_tf1; _run_in_tf1({json.dumps(list(TF1_CASES))}, {json.dumps(tmp)})"
        done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, f"the TF1 reference failed:\n{done.stderr[-3000:]}"
        references = {}
        for name in TF1_CASES:
            with np.load(os.path.join(tmp, f"{name}.npz")) as saved:
                references[name] = {k: saved[k] for k in saved.files}
        return references


def check_against_tf1(name: str) -> None:
    compare(tf1_references()[name], layer_data(name), atol=TORCH_ATOL, rtol=TORCH_RTOL, source="TF1 LSTMCell (float64)")


@pytest.mark.parametrize("name", TF1_CASES)
def test_layer_matches_tf1_lstmcell(name):
    skip_without_tf1()
    check_against_tf1(name)
