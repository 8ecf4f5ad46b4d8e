"""Tests of fl_lightning (a package, so that they import their helpers as ``tests.helpers``)."""
