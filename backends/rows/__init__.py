"""The built-in rows, one module per framework: each row its declarations, its layout and its call (contract.row)."""
