"""The tutorials' workload end to end: the row-by-row digit classifier trained identically in every framework.

    python -m training.digits [--quick]     (or python3 dev.py train [--quick])

Modules: data (scikit-learn's digits, the split, the batch schedule, the tutorials' shape for timing),
model (the canonical parameters and the shared initial weights), head (the NumPy dense layer and
softmax cross-entropy with hand-derived gradients), optimizer (the shared RMSProp step), frameworks/
(the model in the spec, PyTorch, Keras 3, flax, TF1, and any row of the suite through the contract,
with backends/' layouts and runtimes), runs (the runs and the child processes that run them),
trajectory (one run's record on disk), bound (distances, the rounding bound, verdicts), report
(Markdown and plots), digits (the command).
"""
