"""viz package of vetseg."""
