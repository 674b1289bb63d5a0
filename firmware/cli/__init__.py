"""The `storebox` command line."""
