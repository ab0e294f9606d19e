"""Warm starts, in the supervisor: the first worker forked early, the zygote, the template process as the
supervisor sees it, the spawner that forks from it, and the learned preload list."""
