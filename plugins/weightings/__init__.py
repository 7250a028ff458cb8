"""Built-in pair weightings are added here, each registered with ``register_weightings``."""
