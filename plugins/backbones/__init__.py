"""Built-in backbones (SR generators) are added here, each registered with ``register_backbones``."""
