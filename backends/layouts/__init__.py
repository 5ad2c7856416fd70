"""Each framework's layout of the LSTM's parameters (NumPy only): the one conversion the rows, the porting command
and the training runs share (contract.layout)."""
