"""metatune: differentiating through solves and trajectories, and meta-learning adaptation."""
