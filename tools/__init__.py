"""Command-line tools built on the contract and the rows: the porting command (tools/port.py)."""
