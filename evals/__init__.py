"""Offline evals: replay past incidents against the sandbox fleet and score them."""
