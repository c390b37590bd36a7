"""Driving devices to their safe state, and keeping at it until it is confirmed."""
