"""Pieces of the desired-state loader (`controller.loader`): CSV member lists and DNS record checks."""
