"""Tests: sweeps."""
