"""The embedded local engine: `schedsearch run spec.yaml` on this machine or an existing Ray.

Ray Tune runs the trials (PBT members, the AutoLRS trainer, the HDET replica group); the
strategies in :mod:`schedsearch.trainers.strategies` make the decisions; the store keeps the
search, its engine state for ``--resume``, and the result. Entry point: :func:`run.run_search`.
"""
