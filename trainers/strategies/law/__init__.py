"""The ``law`` strategy: fit a loss-vs-schedule law on cheap probes, optimise the whole schedule.

``config`` its parameters, ``laws`` the two laws (Multi-Power, Tissue) evaluated on per-step LRs,
``fit`` fitting them to probe curves, ``optimise`` the schedule that minimises the predicted final
loss, ``probe`` which probe runs to train, ``runner`` training the probes and the verification,
``state`` what a search saves to resume.
"""
