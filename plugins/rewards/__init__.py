"""Built-in rewards (pyiqa metrics, the hybrid reward) are added here.

Each is registered with the ``register_rewards`` hook.
"""
