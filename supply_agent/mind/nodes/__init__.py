"""The graph's nodes, one module per stage: each node is a function of (state, deps) returning the
state update, so a unit test calls it directly."""
