"""Bridges to other detection code bases (detrex)."""
