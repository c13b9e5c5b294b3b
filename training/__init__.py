"""Training engine on NumPy or CuPy (``training.xp``; issues 3 and 9); uses only imcsim's public API."""
