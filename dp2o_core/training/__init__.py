"""Preference tuning: the Diffusion-DPO objective, training data from a run, the trainer.

``objective`` is pure tensor maths (docs/method.md §5); ``data`` turns a run's pairs table and
caches into batches; ``trainer`` runs the optimisation on accelerate. Importing this
package imports no torch; the modules do.
"""
