"""Compiled PyTorch: ``torch.compile`` (Dynamo, AOTAutograd and Inductor's generated C++) and ``torch.export`` over the
rows of backends/rows/torch.py, each declared beside its eager row (``eager``), the same layout and call:

    torch.compile/nn.LSTM                  ``torch.compile`` of torch/nn.LSTM's call as shipped: Dynamo does not trace
                                           nn.LSTM (``allow_rnn`` is False in 2.13) and runs it eagerly; detected, and
                                           a known non-conformance of the compiled path (it never runs)
    torch.compile/nn.LSTM(allow_rnn)       with ``torch._dynamo.config.allow_rnn``: Dynamo traces nn.LSTM (aten.lstm)
                                           and Inductor compiles it
    torch.compile/peephole                 the spec's equations in torch ops (torch/peephole's autograd form): the
                                           kernel engineer's hand-written loop, Inductor's own code for it
    torch.compile/peephole(max-autotune)   the same in mode ``max-autotune-no-cudagraphs``
    torch.compile/peephole(dynamic)        ``dynamic=True``: one compilation meant to serve every B (the loop over
                                           T is unrolled: each T is a graph of its own, counted)
    torch.export/nn.LSTM                   ``torch.export.export`` of nn.LSTM's call, run through the exported
                                           program's module (forward only: the deployment path)

Never a silent eager fallback: every compiled call runs with ``fullgraph`` where the path promises a whole graph (a
graph break raises, with Dynamo's reason), with the recompile limit raised for the suite's many shapes and
``fail_on_recompile_limit_hit`` (a limit reached raises instead of running eagerly), and each row counts the graphs it
compiled, its recompilations and its graph breaks (``compile_counts``, recorded in its environment). The as-shipped
row compiles without ``fullgraph``, as users write it, and its call checks that a graph was compiled at all.

Inductor compiles per shape (seconds to tens of seconds each on 2 cores): these rows run when asked
(``pytest conformance --compiled``, and in CI), not in the default run.
"""

from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass, field

from backends.rows.torch import TorchLSTM, TorchPeepholeLSTM, peephole_forward_autograd, run_lstm
from backends.runtimes.torch import torch
from contract.row import KnownFailure
from contract.vocabulary import Device, Dtype, Feature

#: Shapes the suite compiles in one run (each case, each seed, outputs and gradients): above Dynamo's default
#: recompile limit (8), which would otherwise fall back to eager for the rest without a word.
RECOMPILE_LIMIT = 256

NEVER_COMPILED = (
    "torch.compile of nn.LSTM as shipped compiles nothing: Dynamo does not trace RNN modules unless "
    "torch._dynamo.config.allow_rnn (False in torch 2.13) and runs the LSTM eagerly, without a warning "
    "(pytorch/pytorch#141184, #149909; #185163 proposes allow_rnn by default). Reproducer: "
    "findings/torch_compile_lstm_runs_eagerly.py")
PACKED_NOT_TRACED = (
    "torch.compile(fullgraph=True) of nn.LSTM over packed sequences: Dynamo does not trace "
    "torch.nn.utils.rnn.pack_padded_sequence (\"Attempted to call function marked as skipped\": by design since "
    "pytorch/pytorch#108096, a workaround for #93501; #162375 and #186553 open), so the call cannot be one graph; "
    "without fullgraph it breaks the graph there and runs the LSTM eagerly. Reproducer: "
    "findings/torch_compile_lstm_runs_eagerly.py")


EXPORT_LENGTHS = (
    "torch.export cannot export pack_padded_sequence: it raises GuardOnDataDependentSymNode (\"Could not extract "
    "specialized integer from data-dependent expression\"), the packed batch's sizes being data; pytorch/pytorch#112044 "
    "(findings/torch_onnx_dynamo_packed_sequence.py, through the ONNX exporter built on it)")


class CompiledPathError(RuntimeError):
    """The compiled path did not run (a graph break, an eager fallback): the row's failure, never its pass."""


def dynamo_counters() -> dict[str, int]:
    """Dynamo's process-wide counts: graphs compiled, graph breaks."""
    from torch._dynamo.utils import counters

    return {"graphs": int(counters["stats"]["unique_graphs"]), "breaks": int(sum(counters["graph_break"].values()))}


@contextlib.contextmanager
def dynamo_settings(**settings):
    """torch._dynamo.config patched for the block: the suite's recompile limit, a limit hit raising, and ``settings``."""
    config = torch()._dynamo.config
    wanted = {"recompile_limit": RECOMPILE_LIMIT, "fail_on_recompile_limit_hit": True, **settings}
    present = {name: value for name, value in wanted.items() if hasattr(config, name)}
    with config.patch(**present):
        yield


@dataclass(eq=False)
class CompiledTorch:
    """What a compiled row adds to its eager row: the compiler's options, and the counts of what it compiled."""

    #: torch.compile's mode (None: default) and dynamic (None: torch's own choice, static first)
    mode: str | None = None
    dynamic: bool | None = None
    fullgraph: bool = True
    allow_rnn: bool = False
    #: the eager row this one compiles (its id)
    eager: str = ""
    compiled: bool = True
    dtypes: tuple = (Dtype.FLOAT32, Dtype.FLOAT64)

    def compiled_function(self, function):
        """``function`` compiled once per row: a copy of it with a code object of its own, since Dynamo keeps its
        compilations, and its decisions to skip a frame, per code object (one row's skip would be another's)."""
        cache = self.__dict__.setdefault("_compiled", {})
        if function not in cache:
            tag = "".join(c if c.isalnum() else "_" for c in getattr(self, "id", "row"))
            code = function.__code__.replace(co_name=f"{function.__name__}__{tag}")
            own = types.FunctionType(code, function.__globals__, code.co_name, function.__defaults__, function.__closure__)
            cache[function] = torch().compile(own, mode=self.mode, dynamic=self.dynamic, fullgraph=self.fullgraph)
        return cache[function]

    def run_compiled(self, function, *args):
        """The compiled call, its graphs and breaks counted; CompiledPathError where nothing was compiled for it."""
        counts = self.__dict__.setdefault("compile_counts", {"calls": 0, "graphs": 0, "breaks": 0})
        before = dynamo_counters()
        with dynamo_settings(allow_rnn=self.allow_rnn):
            result = self.compiled_function(function)(*args)
        after = dynamo_counters()
        new_graphs, breaks = after["graphs"] - before["graphs"], after["breaks"] - before["breaks"]
        counts["calls"] += 1
        counts["graphs"] += new_graphs
        counts["breaks"] += breaks
        if counts["graphs"] == 0 or breaks:
            from torch._dynamo.utils import counters

            reasons = "; ".join(sorted(" ".join(str(reason).split())[:160] for reason in counters["graph_break"]))
            raise CompiledPathError(
                f"the compiled path did not run: torch.compile compiled {counts['graphs']} graph(s) for this call "
                f"({breaks} graph break(s); Dynamo's reasons: {reasons or 'none recorded'}): the LSTM ran eagerly")
        return result

    def compile_environment(self) -> dict[str, object]:
        return {"compiler": "torch.compile (inductor)", "mode": self.mode or "default", "dynamic": self.dynamic,
                "fullgraph": self.fullgraph, "allow_rnn": self.allow_rnn, "eager row": self.eager,
                "compile_counts": dict(self.__dict__.get("compile_counts", {}))}

    def _environment(self, device):
        return {**super()._environment(device), **self.compile_environment()}

    def recompilations(self) -> int:
        """Graphs compiled beyond the first, over every call so far (each new shape, each grad mode)."""
        return max(0, self.__dict__.get("compile_counts", {}).get("graphs", 0) - 1)


# The functions compiled: torch itself passed in, as Dynamo traces it (the runtime's lazy import is not traced).
def _lstm_call(module, x, h0, c0, lengths):
    import torch as t

    return run_lstm(module, x, h0, c0, lengths, t=t)


@dataclass(eq=False)
class TorchCompiledLSTM(CompiledTorch, TorchLSTM):
    id: str = "torch.compile/nn.LSTM"
    description: str = "torch.compile of torch/nn.LSTM's call as users write it (mode default, no fullgraph)"
    devices: tuple = (Device.CPU, Device.CUDA)
    fullgraph: bool = False
    eager: str = "torch/nn.LSTM"

    def call(self, module, x, h0, c0, lengths, mask, *, layer):
        return self.run_compiled(_lstm_call, module, x, h0, c0, lengths)


def _peephole_call(weights, x, h0, c0):
    import torch as t

    return peephole_forward_autograd(weights, x, h0, c0, t)


@dataclass(eq=False)
class TorchCompiledPeephole(CompiledTorch, TorchPeepholeLSTM):
    id: str = "torch.compile/peephole"
    description: str = "torch.compile (Inductor, fullgraph) of the spec's equations in torch ops, peepholes included"
    policies: dict = field(default_factory=dict)
    eager: str = "torch/peephole"

    def call(self, weights, x, h0, c0, lengths, mask, *, layer):
        h_seq, h_T, c_T = self.run_compiled(_peephole_call, weights, x, h0[0], c0[0])
        return h_seq, h_T[None], c_T[None]


@dataclass(eq=False)
class TorchExportedLSTM(TorchLSTM):
    """torch.export.export of nn.LSTM's call (one program per shape: export specialises), run by the exported
    program's module()."""

    id: str = "torch.export/nn.LSTM"
    description: str = "torch.export.export of torch/nn.LSTM's call, run through ExportedProgram.module()"
    compiled: bool = True
    devices: tuple = (Device.CPU,)
    dtypes: tuple = (Dtype.FLOAT32, Dtype.FLOAT64)
    features: frozenset = frozenset({Feature.STACKED, Feature.BIDIRECTIONAL, Feature.PROJECTION})
    gradients: bool = False
    eager: str = "torch/nn.LSTM"
    reasons: dict = field(default_factory=lambda: {
        **TorchLSTM().reasons, Feature.LENGTHS: EXPORT_LENGTHS,
        "gradients": "an exported program is the deployment path: run for inference (its module() holds no autograd "
                     "graph of the original parameters)"})

    def call(self, module, x, h0, c0, lengths, mask, *, layer):
        t = torch()
        programs = self.__dict__.setdefault("_programs", {})
        key = (id(module), tuple(x.shape), None if lengths is None else tuple(lengths.tolist()), str(x.dtype))
        if key not in programs:
            wrapper = _ExportWrapper(module)
            arguments = (x, h0, c0) if lengths is None else (x, h0, c0, lengths)
            programs[key] = t.export.export(wrapper, arguments).module()
        program = programs[key]
        return program(x, h0, c0) if lengths is None else program(x, h0, c0, lengths)

    def _environment(self, device):
        return {**super()._environment(device), "compiler": "torch.export (ExportedProgram.module())",
                "eager row": self.eager}


def _ExportWrapper(module):
    t = torch()

    class Wrapper(t.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = module

        def forward(self, x, h0, c0, lengths=None):
            return run_lstm(self.lstm, x, h0, c0, lengths, t=t)

    return Wrapper()


ROWS = (
    TorchCompiledLSTM(known_failures=(KnownFailure(NEVER_COMPILED),)),
    TorchCompiledLSTM(id="torch.compile/nn.LSTM(allow_rnn)", allow_rnn=True, fullgraph=True,
                      description="torch.compile (fullgraph) of torch/nn.LSTM's call with torch._dynamo.config.allow_rnn",
                      known_failures=(KnownFailure(PACKED_NOT_TRACED, features={Feature.LENGTHS}),)),
    TorchCompiledPeephole(),
    TorchCompiledPeephole(id="torch.compile/peephole(max-autotune)", mode="max-autotune-no-cudagraphs",
                          description="torch.compile of the spec's equations in torch ops, mode max-autotune-no-cudagraphs"),
    TorchCompiledPeephole(id="torch.compile/peephole(dynamic)", dynamic=True,
                          description="torch.compile(dynamic=True) of the spec's equations in torch ops: one compilation "
                                      "across T and B"),
    TorchExportedLSTM(),
)

__all__ = ["EXPORT_LENGTHS", "NEVER_COMPILED", "PACKED_NOT_TRACED", "RECOMPILE_LIMIT", "ROWS", "CompiledPathError", "CompiledTorch",
           "TorchCompiledLSTM", "TorchCompiledPeephole", "TorchExportedLSTM", "dynamo_counters", "dynamo_settings"]
