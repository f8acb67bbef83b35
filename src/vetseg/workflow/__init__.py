"""workflow package of vetseg."""
