"""Workers' health, in the supervisor: the pure judge of heartbeats and limits, and the watch that acts on it."""
