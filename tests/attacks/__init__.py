"""Tests: attacks."""
