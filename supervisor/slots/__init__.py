"""The slot engine, in the supervisor: each worker's lifecycle machine, the restart policy, the executor that
carries out the machine's actions, and the web workers' capacity. Web workers and programs both run on it."""
