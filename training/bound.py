r"""How far honest float32 training may drift from the reference run, and the verdicts against that bound.

Distance. At a kept step k, run a is compared with run b tensor by tensor, relative to the reference
run's tensor at that step, and the worst tensor counts:

    d_k(a, b) = max over W, U, b, Wd, bd of  ||a_k - b_k||_2 / ||ref_k||_2

(b and bd start at zero, so their relative distance at the first steps is the relative difference of
the first updates, i.e. of the first gradients: the most sensitive place for a bias bug.)

Why float32 runs differ, and how much (the derivation). Two runs whose gradients differ only by
rounding, g + delta and g + delta', with |delta| about eps_g |g| (eps_g: a few eps32 = 1.19e-7 for
sums of T B = 1024 terms), start to differ at step 1 by lr |delta - delta'| / sqrt(ms): relative to
the first update, about eps_g, which is the whole relative distance of the zero-initialised biases.
From then on three things move them apart:

  (a) the gradient differences of every step, lr (delta_k - delta'_k) / sqrt(ms_k): independent signs,
      a random walk, of size about lr eps_g sqrt(k) per element;
  (b) the rounding of the update itself: theta - u is rounded to float32 at every step, and once two
      runs' parameters differ at all, their roundings are independent: a random walk of half an ulp
      per step, eps32 |theta| sqrt(k / 6) or so (two independent roundings, each of variance ulp^2/12);
  (c) the training dynamics: a parameter difference changes the next gradients by H Delta (H the loss's
      curvature), and descent pulls nearby runs towards the same minimum: differences are damped
      (a random walk held back, like an Ornstein-Uhlenbeck process), not amplified; and the
      parameters' norms, the distance's denominators, grow as they train.

With updates of about lr = 1e-3 per element and |theta| about 0.1, (b) dominates (a) unless eps_g
exceeds tens of eps32: the distance starts at about eps_g and then grows more slowly than
eps32 sqrt(k) (measured on the digits: E_k ~ k^0.16 over 500 steps, from 9 to 16 eps32), and which
honest float32 implementation computed the gradient hardly matters, while a gradient that is wrong by
more than rounding (a bug) moves the parameters by a fraction of lr at once: its distance at step 1
is the relative error of its gradient, about 1, against a bound of about ten eps32.

Until the model has learnt its training set. Past that (on the digits from about step 1000, training
loss below about 0.04) most examples' gradients are tiny and cancel, and RMSProp scales whatever is
left, rounding included, back up to steps of about lr: (c) turns into amplification, and the honest
spread grows exponentially (measured: doubling about every 30 steps from step 1100, of order 0.1 to 1
from step 1600). There honest float32 runs are as far apart as a bug puts them: the bound, measured
step by step, grows with them and stops telling a bug from rounding, and "trains the same" can only be
judged statistically (by losses and accuracies over many seeds). The full run stops at 500 steps,
well inside the regime where the comparison is exact.

What the bound does not cover: effects common to every float32 run. All of them share the float32
optimizer step, whose constants are themselves rounded (decay 0.9 is 0.89999998 in float32); the
spec trained in float64 therefore drifts from the float32 runs by more than they spread among
themselves, and comes back within once it uses float32's constants (the report's float64 rows).

Measurement. The spec is trained in float32 with its sums taken in other, equally valid orders
(:data:`training.runs.REORDERINGS`: batch rows shuffled, hidden units relabelled, input pixels
relabelled, the gradient computed in float64 and rounded once). Their pairwise distances, reference
included, at each kept step, give the honest cloud's diameter D_k; its running maximum is the
envelope E_k (the bound should not dip where a sample happens to come close).

The bound: B_k = 2 E_k. A framework's run is one more honest float32 run, so its distance to the
reference should lie within the cloud's diameter; the factor 2 allows for a framework whose per-step
gradient error is up to twice a reordering's (the report shows every run's gradient error at step 0
against float64 beside it) and for the cloud being sampled by only a few runs. It is fixed here,
before any framework is looked at, and never widened to let one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from training.model import NAMES
from training.trajectory import Trajectory

#: B_k = FACTOR * E_k (see the module docstring).
FACTOR = 2.0


def _norms(ref: Trajectory) -> dict[str, np.ndarray]:
    """||ref_k|| per tensor and kept step, float64."""
    return {k: np.sqrt(np.sum(ref.params[k].astype(np.float64).reshape(len(ref.steps), -1) ** 2, axis=1)) for k in NAMES}


def distances(a: Trajectory, b: Trajectory, ref: Trajectory) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(steps, d_k(a, b), the worst tensor at each step) at the steps all three kept."""
    steps = np.intersect1d(np.intersect1d(a.steps, b.steps), ref.steps)
    norms = _norms(ref)
    ia, ib, ir = (np.searchsorted(t.steps, steps) for t in (a, b, ref))
    per_tensor = []
    for name in NAMES:
        diff = a.params[name][ia].astype(np.float64) - b.params[name][ib].astype(np.float64)
        num = np.sqrt(np.sum(diff.reshape(len(steps), -1) ** 2, axis=1))
        den = norms[name][ir]
        with np.errstate(divide="ignore", invalid="ignore"):
            per_tensor.append(np.where(num == 0, 0.0, num / np.where(den == 0, np.nan, den)))
    per_tensor = np.nan_to_num(np.stack(per_tensor), nan=np.inf)  # a difference where the reference is zero: infinite
    worst = per_tensor.argmax(axis=0)
    return steps, per_tensor.max(axis=0), [NAMES[i] for i in worst]


@dataclass(frozen=True)
class Bound:
    steps: np.ndarray
    diameter: np.ndarray  # D_k: the largest pairwise distance among the honest runs
    envelope: np.ndarray  # E_k: its running maximum
    bound: np.ndarray  # B_k = FACTOR * E_k
    runs: tuple[str, ...]  # the honest runs it was measured from (the reference first)

    def at(self, steps: np.ndarray) -> np.ndarray:
        return self.bound[np.searchsorted(self.steps, steps)]

    def growth_exponent(self, start: int = 10) -> float:
        """p in E_k ~ c k^p, fitted (least squares in log-log) over the kept steps from ``start`` on."""
        keep = (self.steps >= start) & (self.envelope > 0)
        if keep.sum() < 3:
            return float("nan")
        return float(np.polyfit(np.log(self.steps[keep]), np.log(self.envelope[keep]), 1)[0])


def measure(reference: Trajectory, honest: list[Trajectory]) -> Bound:
    runs = [reference, *honest]
    steps = reference.steps
    diameter = np.zeros(len(steps))
    for a, b in combinations(runs, 2):
        s, d, _ = distances(a, b, reference)
        diameter[np.searchsorted(steps, s)] = np.maximum(diameter[np.searchsorted(steps, s)], d)
    envelope = np.maximum.accumulate(diameter)
    return Bound(steps, diameter, envelope, FACTOR * envelope, tuple(r.run_id for r in runs))


@dataclass(frozen=True)
class Verdict:
    within: bool
    first_step_beyond: int | None  # the first kept step where d > B
    worst_ratio: float  # max_k d_k / B_k
    worst_step: int
    largest_distance: float  # max_k d_k
    largest_step: int  # where it is
    final_distance: float
    final_ratio: float
    worst_tensor: str  # the tensor farthest off at the final step


def judge(run: Trajectory, reference: Trajectory, bound: Bound) -> tuple[Verdict, np.ndarray, np.ndarray]:
    """The run's distance to the reference at every kept step against the bound; (verdict, steps, d)."""
    steps, d, worst = distances(run, reference, reference)
    b = bound.at(steps)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(d == 0, 0.0, d / b)
    beyond = np.flatnonzero(d > b)
    i = int(np.argmax(ratio))
    verdict = Verdict(
        within=len(beyond) == 0,
        first_step_beyond=int(steps[beyond[0]]) if len(beyond) else None,
        worst_ratio=float(ratio[i]),
        worst_step=int(steps[i]),
        largest_distance=float(d.max()),
        largest_step=int(steps[int(np.argmax(d))]),
        final_distance=float(d[-1]),
        final_ratio=float(ratio[-1]),
        worst_tensor=worst[-1],
    )
    return verdict, steps, d
