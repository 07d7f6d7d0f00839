"""The mind: the graph, triage and the planners. It may propose anything; it decides nothing."""
