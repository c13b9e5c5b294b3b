"""Numba kernels of imcsim. Imports only numpy and numba; validated callers live in imcsim."""
