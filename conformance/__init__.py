"""The conformance suite's library: comparisons and their messages (more to come with the backends)."""
