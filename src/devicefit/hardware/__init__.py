"""Device targets, profilers, cost and latency models (issue #3 fills this layer)."""

__all__: list[str] = []
