"""HDET (Hyperparameter-Divergent Ensemble Training): replicas fan out over LRs around a base LR,
average their parameters periodically, and move the base LR towards the better replicas.

As a search it starts from a peak chosen by annealed probes (``probe``), scores the replicas at
each sync by annealed evaluation, and ends in the trained cooldown of ``spec.evaluation``.
``controller`` decides (pure), ``scheduler`` is the drop-in for a data-parallel loop, ``worker``
is one replica process, ``runner`` launches a local replica set.
"""
