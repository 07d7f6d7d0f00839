"""Containment: the guarded executor (``sandbox.executor``) and the sandbox fleet (``sandbox.fleet``)."""
