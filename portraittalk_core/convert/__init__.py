"""Converting other model families' checkpoints."""
