"""Tests: aggregators."""
