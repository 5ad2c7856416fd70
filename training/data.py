"""The data: scikit-learn's handwritten digits read row by row, the batch schedule, and synthetic data
of the tutorials' exact shape for timing. Nothing is downloaded: the digits ship inside scikit-learn.

The digits (scikit-learn's ``load_digits``: 1,797 images of 8 x 8 pixels, values 0..16, ten classes)
are read as the tutorials read MNIST: each image is a sequence of its rows, T = 8 steps of I = 8 pixels.
Pixels are divided by 16, which is exact in float32, so every framework sees bit-identical inputs.

The split is stratified (every class in the same proportion on both sides) and seeded; the batches of
every training step are fixed in advance (a shuffled pass over the training set per epoch, the last
partial batch dropped so that every step sees exactly ``batch_size`` images) and stored with the data,
so that every framework trains on the same batches in the same order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from safetensors.numpy import load_file, save_file

#: The tutorials' model: 128 hidden units, batches of 128, ten classes.
HIDDEN = 128
BATCH = 128
CLASSES = 10
#: The tutorials' MNIST shape (28 steps of 28 pixels), used on synthetic data for the timing column.
TUTORIAL_STEPS = TUTORIAL_INPUTS = 28

DATA_FORMAT = "lstm-conformance-training-data"


@dataclass(frozen=True, eq=False)
class Digits:
    """The split data set and the batch schedule; images are (N, T, I) float32, labels (N,) int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    batches: np.ndarray  # (steps, B) int64: indices into the training set, one row per training step

    @property
    def steps(self) -> int:
        return self.batches.shape[0]

    @property
    def sequence_shape(self) -> tuple[int, int]:
        """(T, I)."""
        return self.x_train.shape[1], self.x_train.shape[2]

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """The inputs of training step ``step``, time-major (T, B, I) as the spec takes them, and the labels (B,)."""
        index = self.batches[step]
        return np.ascontiguousarray(self.x_train[index].transpose(1, 0, 2)), self.y_train[index]

    def test_set(self) -> tuple[np.ndarray, np.ndarray]:
        """The test images time-major (T, N, I) and their labels."""
        return np.ascontiguousarray(self.x_test.transpose(1, 0, 2)), self.y_test

    def save(self, path: str | os.PathLike) -> None:
        tensors = {"x_train": self.x_train, "y_train": self.y_train, "x_test": self.x_test, "y_test": self.y_test,
                   "batches": self.batches}
        save_file(tensors, os.fspath(path), metadata={"format": DATA_FORMAT})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Digits:
        t = load_file(os.fspath(path))
        return cls(t["x_train"], t["y_train"], t["x_test"], t["y_test"], t["batches"])


def load_digits_split(test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits as (N, 8, 8) float32 rows in [0, 1], split stratified: x_train, y_train, x_test, y_test."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)  # 0..16 -> [0, 1], exact
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    return (np.ascontiguousarray(x_train), np.ascontiguousarray(y_train), np.ascontiguousarray(x_test),
            np.ascontiguousarray(y_test))


def batch_schedule(train_size: int, batch_size: int, steps: int, seed: int = 0) -> np.ndarray:
    """(steps, batch_size) indices: epoch after epoch a fresh permutation of the training set, cut into
    full batches (the remainder of each epoch is dropped, as the tutorials' ``next_batch`` never
    returns a short one)."""
    if batch_size > train_size:
        raise ValueError(f"batch size {batch_size} exceeds the training set ({train_size} images)")
    rng = np.random.default_rng(seed)
    per_epoch = train_size // batch_size
    rows = []
    while len(rows) < steps:
        order = rng.permutation(train_size)
        rows.extend(order[k * batch_size : (k + 1) * batch_size] for k in range(per_epoch))
    return np.stack(rows[:steps]).astype(np.int64)


def make_digits(steps: int, *, batch_size: int = BATCH, test_fraction: float = 0.2, seed: int = 0) -> Digits:
    x_train, y_train, x_test, y_test = load_digits_split(test_fraction, seed)
    return Digits(x_train, y_train, x_test, y_test, batch_schedule(len(x_train), batch_size, steps, seed))


def tutorial_batch(seed: int = 0, batch_size: int = BATCH) -> tuple[np.ndarray, np.ndarray]:
    """Seeded synthetic data of the tutorials' MNIST shape: x (T=28, B, I=28) in [0, 1) float32, labels (B,)."""
    rng = np.random.default_rng([seed, 28])
    x = rng.random((TUTORIAL_STEPS, batch_size, TUTORIAL_INPUTS), dtype=np.float32)
    y = rng.integers(0, CLASSES, size=batch_size).astype(np.int64)
    return x, y
