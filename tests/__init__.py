"""vetseg tests."""
