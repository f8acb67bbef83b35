"""io package of vetseg."""
