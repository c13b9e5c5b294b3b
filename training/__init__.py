"""NumPy training engine (see issue 3); uses only imcsim's public API."""
