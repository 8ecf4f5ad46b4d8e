"""Tests: data."""
