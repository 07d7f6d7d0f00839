"""The sandbox fleet: a simulated GPU cluster served over the real Kubernetes REST API."""
