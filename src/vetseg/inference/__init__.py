"""inference package of vetseg."""
