"""``vetseg review``: correct pre-labels in the browser (a local FastAPI app with NiiVue)."""
