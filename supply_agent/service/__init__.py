"""``supply-agent serve``'s worker: dispatch, runs, approvals (Slack and terminal), write-back, its HTTP API."""
