"""HDET (Hyperparameter-Divergent Ensemble Training): replicas fan out over LRs around a base LR,
average their parameters periodically, and move the base LR towards the better replicas.

``controller`` decides (pure), ``scheduler`` is the drop-in for a data-parallel loop, ``worker``
is one replica process, ``runner`` launches a local replica set.
"""
