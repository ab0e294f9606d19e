"""The listening side, in the supervisor: the held port, the 503 answer while no worker can serve, and
the open-file limit."""
