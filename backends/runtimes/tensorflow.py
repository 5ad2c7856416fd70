"""TensorFlow's runtimes: eager TensorFlow 2 (:data:`TENSORFLOW`) and TensorFlow 1's graph mode (:data:`TF1`).

TensorFlow is imported once, when a row first needs it, with its C++ log quieted (``TF_CPP_MIN_LOG_LEVEL``
before the import: it is read once) and TF32 off (it would round float32 products to 10 bits on Ampere and
later). The CPU thread pools are TensorFlow's choice in eager mode (they cannot change once TensorFlow has
initialised; ``environment()`` records them); a TF1 Session gets ``LSTMC_THREADS`` (0: TensorFlow's choice).

Eager: a row's call runs in a ``tf.function`` per function object (TensorFlow's trace cache keys it by shapes,
dtypes, Python values and the device scope); gradients by ``tf.GradientTape`` in a ``tf.function`` of their own,
unconnected ones as zeros (a parameter the call does not use, such as the peepholes of a block op without them).

Graph mode (TF1's ``nn.rnn_cell``): a row builds its graph with :meth:`GraphRuntime.graph`, once per key, and runs
it with the Session that comes with it.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import cache

import numpy as np

from contract.errors import Unavailable
from contract.runtime import Runtime, cpu_model, framework_problem, import_framework, threads_wanted
from contract.vocabulary import Device, Dtype

INSTALL_HINT = "tensorflow is not installed (pip install 'lstm-conformance[tensorflow]')"
TF_KERAS_HINT = (
    "tf-keras is not installed: TF1's nn.rnn_cell cells need it beside tensorflow-cpu (python3 dev.py setup installs "
    "it; by hand: pip install --no-deps tf-keras==<TensorFlow's version>, since its dependency on `tensorflow` "
    "would replace tensorflow-cpu)"
)


@cache
def tensorflow():
    """TensorFlow, imported once, with TF32 switched off."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before the import: TensorFlow reads it once
    tf = import_framework("tensorflow", INSTALL_HINT)
    tf.config.experimental.enable_tensor_float_32_execution(False)
    return tf


def tensorflow_problem() -> str | None:
    """None if TensorFlow imports (and TF32 could be switched off), else why not."""
    try:
        tensorflow()
    except Unavailable as error:
        return str(error)
    return None


def cuda_problem() -> str | None:
    tf = tensorflow()
    if not tf.test.is_built_with_cuda():
        return "this TensorFlow build has no CUDA (tensorflow-cpu); GPU runs need tensorflow[and-cuda] on a machine with a GPU"
    if not tf.config.list_physical_devices("GPU"):
        return "TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') is empty)"
    return None


def tf_device(device: str) -> str:
    return "/GPU:0" if device == Device.CUDA else "/CPU:0"


def device_name(device: str) -> str:
    """What ``environment()`` records as the device: TensorFlow's name for it, and the model."""
    tf = tensorflow()
    if device != Device.CUDA:
        return f"CPU:0 {cpu_model()}"
    gpus = tf.config.list_physical_devices("GPU")
    name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else None
    return f"GPU:0 {name}" if name else "no GPU visible"


class TensorFlowRuntime(Runtime):
    name = "tensorflow"

    def __init__(self):
        self._compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._gradients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def availability(self, device: str) -> str | None:
        if (problem := tensorflow_problem()) is not None:
            return problem
        return cuda_problem() if device == Device.CUDA else None

    def environment(self, device: str) -> dict[str, object]:
        tf = tensorflow()
        return {
            "tensorflow": tf.__version__,
            "device": device_name(device),
            "tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
            # 0 means "TensorFlow chooses" (all cores); they cannot be changed once TensorFlow has initialised.
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "built_with_cuda": tf.test.is_built_with_cuda(),
        }

    def to_device(self, array: np.ndarray, device: str):
        tf = tensorflow()
        with tf.device(tf_device(device)):
            return tf.constant(np.array(array))

    def to_numpy(self, tensor) -> np.ndarray:
        return tensor.numpy()

    def run(self, function: Callable, *args):
        """``function(*args)`` in a tf.function made once per function object."""
        if function not in self._compiled:
            self._compiled[function] = tensorflow().function(function)
        return self._compiled[function](*args)

    def vjp(self, function, built, inputs, cotangents, extra=()):
        if function not in self._gradients:
            self._gradients[function] = tensorflow().function(_tape_vjp(function))
        return self._gradients[function](built, tuple(inputs), tuple(cotangents), tuple(extra))

    def cast(self, tensor, dtype: Dtype):
        tf = tensorflow()
        return tf.cast(tensor, getattr(tf, str(dtype)))

    def synchronize(self, device: str) -> None:
        if device == Device.CUDA:  # GPU kernels run asynchronously; TensorFlow's eager CPU calls return finished
            tensorflow().test.experimental.sync_devices()

    @contextlib.contextmanager
    def on(self, device: str):
        with tensorflow().device(tf_device(device)):
            yield


def _tape_vjp(function: Callable) -> Callable:
    """The gradients of ``function(built, *inputs, *extra)`` for these cotangents by tf.GradientTape: (gradients of
    ``built``'s tensors by name, then one per input); a gradient the call does not connect is zeros."""

    def gradients(built, inputs, cotangents, extra):
        tf = tensorflow()
        weights = {name: value for name, value in built.items() if tf.is_tensor(value)}
        sources = [*inputs, *weights.values()]
        with tf.GradientTape() as tape:
            tape.watch(sources)
            outputs = function(built, *inputs, *extra)
        grads = tape.gradient(list(outputs), sources, output_gradients=list(cotangents),
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return dict(zip(weights, grads[len(inputs):])), *grads[: len(inputs)]

    return gradients


# ---------------------------------------------------------------------------
# TensorFlow 1's graph mode
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Graph:
    """A built graph's tensors (``nodes``: what the row's build returned) and the Session that runs them."""

    nodes: object
    session: object

    def run(self, fetches, feed: dict):
        return self.session.run(fetches, feed)


def session_threads() -> int:
    """LSTMC_THREADS for a Session's thread pools; 0 is TensorFlow's choice (every core)."""
    return threads_wanted() or 0


class GraphRuntime(TensorFlowRuntime):
    """TF1's ``tf.compat.v1`` graph mode: a ``tf.Graph`` per key and a ``Session`` for each. Its rows run their graphs
    through their own hooks (``_outputs``, ``_gradients``); they need tf-keras and ``TF_USE_LEGACY_KERAS=1``."""

    name = "tensorflow (graph mode)"

    def __init__(self):
        super().__init__()
        self._graphs: dict[Hashable, Graph] = {}
        #: How many graphs this process has built (the smoke tests and the benchmarks read it).
        self.graphs_built = 0

    def availability(self, device: str) -> str | None:
        if (problem := tensorflow_problem()) is not None:
            return problem
        if (problem := framework_problem("tf_keras", TF_KERAS_HINT)) is not None:
            return problem
        return cuda_problem() if device == Device.CUDA else None

    def cell_problem(self, cell: str) -> str | None:
        """None if ``tf.compat.v1.nn.rnn_cell.<cell>`` is there, else why not."""
        try:
            getattr(tensorflow().compat.v1.nn.rnn_cell, cell)
        except (AttributeError, ImportError) as error:
            return f"tf.compat.v1.nn.rnn_cell.{cell} is unavailable: {error} (it needs tf-keras and TF_USE_LEGACY_KERAS=1)"
        return None

    def environment(self, device: str) -> dict[str, object]:
        tf = tensorflow()
        return {
            "tensorflow": tf.__version__,
            "tf_keras": import_framework("tf_keras", TF_KERAS_HINT).__version__,
            "TF_USE_LEGACY_KERAS": os.environ.get("TF_USE_LEGACY_KERAS"),
            "mode": "graph (tf.Graph, tf.compat.v1.Session)",
            "device": device_name(device),
            "tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
            "session_threads": session_threads() or "TensorFlow's choice (0)",
            "built_with_cuda": tf.test.is_built_with_cuda(),
        }

    def graph(self, key: Hashable, device: str, build: Callable[[], object]) -> Graph:
        """``build()`` run in a ``tf.Graph`` of its own under ``device``'s scope, with a Session (soft placement,
        LSTMC_THREADS threads): made once per ``key`` (the caller's: its row, layer, shapes, dtype, ...) and kept for
        the process."""
        if key not in self._graphs:
            tf = tensorflow()
            tf1 = tf.compat.v1
            graph = tf.Graph()
            with graph.as_default(), tf.device(tf_device(device)):
                nodes = build()
            threads = session_threads()
            config = tf1.ConfigProto(allow_soft_placement=True, intra_op_parallelism_threads=threads,
                                     inter_op_parallelism_threads=threads)
            self._graphs[key] = Graph(nodes, tf1.Session(graph=graph, config=config))
            self.graphs_built += 1
        return self._graphs[key]


TENSORFLOW = TensorFlowRuntime()
TF1 = GraphRuntime()

__all__ = [
    "INSTALL_HINT", "TENSORFLOW", "TF1", "TF_KERAS_HINT", "Graph", "GraphRuntime", "TensorFlowRuntime", "cuda_problem",
    "device_name", "session_threads", "tensorflow", "tensorflow_problem", "tf_device",
]
