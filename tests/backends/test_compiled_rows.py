"""The compiled rows (backends/rows/torch_compiled.py): an eager fallback is a failure, never a pass; a graph break
under fullgraph raises; recompilations are counted; the rows run only when asked (--compiled). Skips without torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from spec.cases import Case, case_by_name, make_case_data
from spec.layer import LayerConfig
from tests.suite import ROOT, subprocess_environment

pytest.importorskip("torch", reason="torch is not installed (pip install 'lstm-conformance[torch]')")


def rows():
    from backends.rows.torch_compiled import ROWS

    return {row.id: row for row in ROWS}


def data(name):
    return make_case_data(case_by_name(name), np.float32)


def test_an_eager_fallback_is_a_failure_never_a_pass():
    """torch.compile of nn.LSTM as shipped runs it eagerly (right answers): the row says so, it does not pass."""
    from backends.rows.torch_compiled import CompiledPathError

    row = rows()["torch.compile/nn.LSTM"]
    d = data("small")
    with pytest.raises(CompiledPathError, match="the compiled path did not run.*Attempted to wrap RNN.*ran eagerly"):
        row.forward(d.params, d.x, d.h0, d.c0, layer=d.layer)
    assert row.compile_counts["graphs"] == 0


def test_a_graph_break_under_fullgraph_raises():
    """Packed sequences break the graph (pack_padded_sequence is never traced): the fullgraph row raises Dynamo's
    Unsupported instead of running them eagerly; the same row compiles and conforms without lengths."""
    from torch._dynamo.exc import Unsupported

    row = rows()["torch.compile/nn.LSTM(allow_rnn)"]
    d = data("packed")
    with pytest.raises(Unsupported, match="marked as skipped"):
        row.forward(d.params, d.x, d.h0, d.c0, layer=d.layer, lengths=d.lengths)
    d = data("stacked-bidirectional")
    got = row.forward(d.params, d.x, d.h0, d.c0, layer=d.layer).y
    np.testing.assert_allclose(got, d.forward().y, atol=2e-5, rtol=2e-5)
    assert row.compile_counts["graphs"] >= 1 and row.compile_counts["breaks"] == 0


def test_recompilations_are_counted_and_dynamic_shapes_reuse_a_graph_across_batch_sizes():
    """Three (T, B) shapes, two of one T: the static row compiles a graph for each; the dynamic row one per T (the loop
    over T is unrolled in the graph, B is symbolic)."""
    static, dynamic = rows()["torch.compile/peephole"], rows()["torch.compile/peephole(dynamic)"]
    for T, B in ((3, 2), (3, 4), (5, 3)):
        d = make_case_data(Case(f"shape{T}x{B}", T, B, 3, 4, LayerConfig(peephole=True), seed=T), np.float32)
        for row in (static, dynamic):
            got = row.forward(d.params, d.x, d.h0, d.c0, layer=d.layer).y
            np.testing.assert_allclose(got, d.forward().y, atol=2e-5, rtol=2e-5, err_msg=row.id)
    assert static.compile_counts["graphs"] == 3 and static.recompilations() == 2
    assert dynamic.compile_counts["graphs"] == 2, dynamic.compile_counts
    assert dynamic.compile_environment()["dynamic"] is True


def test_the_compiled_rows_run_only_when_asked():
    def collected(*extra):
        done = subprocess.run([sys.executable, "-m", "pytest", "conformance", "--collect-only", "-q", "-p",
                               "no:cacheprovider", "-p", "no:xdist", "--dtype", "float32", "-k", "outputs and small and "
                               "not peephole", *extra], cwd=ROOT, capture_output=True, text=True, timeout=600,
                              env=subprocess_environment())
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout

    default, asked = collected(), collected("--compiled")
    assert "torch/nn.LSTM-" in default and "torch.compile/" not in default and "torch.export/" not in default
    assert "torch.compile/nn.LSTM(allow_rnn)-" in asked and "torch.export/nn.LSTM-" in asked
