"""The read-only console: pages of what the agent saw, decided and did, and how much budget is left."""
