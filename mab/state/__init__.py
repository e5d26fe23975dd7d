"""Durable online-learning state: the feedback journal and the snapshots that let it
be pruned."""
