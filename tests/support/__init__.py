"""Helpers shared by the test layers (imported by tests; never collected as tests)."""
