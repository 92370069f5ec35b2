"""The training loop (`train`), its pieces and what only trained runs use (predict, write-bank)."""
