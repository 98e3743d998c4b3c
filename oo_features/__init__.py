"""The `oo-features` command line and the local services it runs."""
