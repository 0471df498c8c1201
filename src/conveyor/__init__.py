"""Conveyor: a self-hosted service for batch ML inference jobs."""

__version__ = "0.1.0"
