"""schedsearch: search learning-rate schedules while models train, keep the best ones."""

__version__ = "0.1.0"
