"""Incidents: the store, checkpoints, and the agent facade that runs one graph thread per incident."""
