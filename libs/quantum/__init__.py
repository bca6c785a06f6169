"""Quantum Trader: an event-driven crypto futures trading fleet on Redis Streams."""

__version__ = "0.1.0"
