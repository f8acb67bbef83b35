"""models package of vetseg."""
