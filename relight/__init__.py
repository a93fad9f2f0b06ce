"""relight domain."""
