"""Shoal: self-healing replicated databases on Docker Swarm, without volumes."""

__version__ = "0.1.0"
