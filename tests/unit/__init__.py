"""Unit tests: pure, fast, no cluster."""
