"""The pipeline stages, each reading the run store and writing its own part of it."""
