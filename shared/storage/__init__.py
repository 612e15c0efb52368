"""Storage: one small async port per concern, with sqlite / postgres / table adapters."""
