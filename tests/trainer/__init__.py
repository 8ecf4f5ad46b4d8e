"""Tests: trainer."""
