"""Collections and search (late interaction over stored page embeddings)."""
