"""data package of vetseg."""
