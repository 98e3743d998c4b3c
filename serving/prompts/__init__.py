"""Versioned orchestrator prompt templates (`<version>.txt`, `string.Template` syntax)."""
