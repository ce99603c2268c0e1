"""A multi-node swarm on one machine (Docker-in-Docker nodes) and faults on its nodes."""
