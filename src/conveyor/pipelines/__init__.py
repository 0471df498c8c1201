"""Pipelines: the base class, the registry, and the shipped pipelines."""
