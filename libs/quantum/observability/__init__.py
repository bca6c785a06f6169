"""Logging, metrics and systemd integration shared by every service."""
