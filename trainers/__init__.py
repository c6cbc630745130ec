"""What runs inside a training pod and inside the local engine: schedules, workloads, strategies."""
