"""The in-process engine: the fleet's handlers on in-memory ports, in causal order."""
