"""A fake ``pynvml`` module over the sandbox's simulated NVML, with chosen functions replaced: how the
collector's tests make one field refuse, an old driver lack a call, or an init fail."""

from __future__ import annotations

import types
from typing import Any

from sandbox.fleet.nvml_sim import SimNvml


def module_over(sim: SimNvml, **overrides: Any) -> types.ModuleType:
    """A module exposing the sim's API, with some functions replaced (None removes one)."""
    module = types.ModuleType("fake_pynvml")
    for name in dir(sim):
        if name.startswith(("nvml", "NVML")):
            setattr(module, name, getattr(sim, name))
    for name, value in overrides.items():
        if value is None:
            delattr(module, name)
        else:
            setattr(module, name, value)
    return module
