r"""The one optimizer step every framework's gradients go through, and what each framework's own RMSProp does.

The shared step is the tutorial's optimizer, TF1's ``RMSPropOptimizer(learning_rate=0.001, decay=0.9)``
(momentum 0, epsilon 1e-10, its mean square initialised to ONE), as plain NumPy in the parameters'
dtype, the same code whatever computed the gradient g:

    ms_0 = 1
    ms_k = rho ms_{k-1} + (1 - rho) g_k^2                 rho = 0.9
    theta_k = theta_{k-1} - lr g_k / sqrt(ms_k + eps)     lr = 0.001, eps = 1e-10

Each framework's own RMSProp, asked for the same learning rate and decay, every other setting left at
its default (:data:`OWN_RMSPROP`), differs from it in the initial mean square (0 or 1) and in where
and how large epsilon is. The largest difference is ms_0: from ms_0 = 0 the first step is
lr g / sqrt(0.1 g^2) = sqrt(10) lr sign(g) for every parameter, whatever the size of its gradient,
while from ms_0 = 1 it is about lr g.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEARNING_RATE = 0.001
DECAY = 0.9
EPSILON = 1e-10
INITIAL_MEAN_SQUARE = 1.0

#: What each framework's own RMSProp is, when asked for learning rate 0.001 and decay 0.9 (defaults otherwise).
OWN_RMSPROP = {
    "tf1": "tf.compat.v1.train.RMSPropOptimizer(0.001, decay=0.9): ms_0 = 1, theta -= lr g / sqrt(ms + 1e-10) "
           "(the shared step's definition, computed by TensorFlow's ApplyRMSProp kernel)",
    "torch": "torch.optim.RMSprop(lr=0.001, alpha=0.9): ms_0 = 0, theta -= lr g / (sqrt(ms) + 1e-8); "
             "nn.LSTM's two biases are two parameters, each updated by the full step (the sum moves twice as far)",
    "keras": "keras.optimizers.RMSprop(learning_rate=0.001, rho=0.9): ms_0 = 0, theta -= lr g / sqrt(ms + 1e-7)",
    "flax": "optax.rmsprop(0.001, decay=0.9): ms_0 = 0 (initial_scale), theta -= lr g / sqrt(ms + 1e-8) (eps_in_sqrt)",
    "spec": "the shared step (NumPy)",
}


@dataclass
class RMSProp:
    """The shared step's state: the mean square of every parameter, keyed by name.

    The constants lr, decay, 1 - decay and eps are rounded to the parameters' dtype, so a float32 run
    computes with decay = 0.89999998, 1 - decay = 0.100000001 and lr = 0.00100000005; ``constants``
    (a dtype) rounds them to that dtype instead, so that a float64 run can use float32's constants.
    """

    mean_square: dict[str, np.ndarray]
    lr: float = LEARNING_RATE
    decay: float = DECAY
    eps: float = EPSILON
    constants: object = None

    @classmethod
    def init(cls, params: dict[str, np.ndarray], **settings) -> RMSProp:
        return cls({k: np.full_like(v, INITIAL_MEAN_SQUARE) for k, v in params.items()}, **settings)

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The updated parameters (new arrays); the mean squares are updated in place."""
        out = {}
        for name, theta in params.items():
            g = grads[name]
            if g.dtype != theta.dtype or g.shape != theta.shape:
                raise ValueError(f"gradient {name}: {g.dtype} {g.shape}, the parameter is {theta.dtype} {theta.shape}")
            c = np.dtype(self.constants or theta.dtype).type
            decay, rest, lr, eps = (theta.dtype.type(c(v)) for v in (self.decay, 1.0 - self.decay, self.lr, self.eps))
            ms = self.mean_square[name]
            ms *= decay
            ms += rest * (g * g)
            out[name] = theta - lr * g / np.sqrt(ms + eps)
        return out
