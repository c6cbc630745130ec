"""schedsearch test suite: unit, integration (real API server) and end-to-end layers."""
