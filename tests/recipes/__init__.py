"""Tests: recipes."""
