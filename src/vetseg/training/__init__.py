"""training package of vetseg."""
