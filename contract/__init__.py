"""The contract between the spec and an implementation of the LSTM: its vocabulary, what goes in and comes back
(answers), a layout, a runtime, a row (the one place the checks run), the tolerance table and the comparison, the
golden-vector format, and loading rows (in a process of their own where they need one)."""
