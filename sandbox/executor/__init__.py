"""The guarded executor: the only code that calls a write tool (issue 3)."""
