"""Intake: a webhook is verified, its shape checked, stored, and only then answered (the ASGI app of the intake
process, signing, the event log)."""
