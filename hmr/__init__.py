"""hmr domain."""
