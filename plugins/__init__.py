"""dp2o's built-in implementations, installed as ``dp2o_plugins``.

Each sub-package registers its classes through the same hooks third-party plugins use.
"""
