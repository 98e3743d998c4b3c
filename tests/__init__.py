"""Tests for the oO feature engine; a package so `tests.fixtures_services` loads as a plugin."""
