"""Fixtures of the controller's cluster tests: the CRDs installed, a controller per test."""

from tests.integration.controller_harness import controller, crds

__all__ = ["controller", "crds"]
