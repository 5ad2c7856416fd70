"""Each framework's runtime: import, availability, environment, numerics, device transfer, gradients (contract.runtime)."""
