"""export stage: lands with its issue; present so the layer contract is checked from day one."""

__all__: list[str] = []
