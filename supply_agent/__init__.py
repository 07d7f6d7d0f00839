"""supply-agent: an autonomous on-call agent for GPU infrastructure."""

__version__ = "0.1.0"
