"""Tests: metrics."""
