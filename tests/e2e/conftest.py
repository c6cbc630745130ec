"""Fixtures of the end-to-end tests: the CRDs installed, a controller per test."""

from tests.integration.controller_harness import controller, crds

__all__ = ["controller", "crds"]
