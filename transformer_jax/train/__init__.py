"""Training: the loop, the jitted steps, optimiser and schedules, parallelism, metrics, run assembly."""
