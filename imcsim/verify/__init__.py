"""Verification: golden model, test vectors, checking of dumps, traces and VCD."""
