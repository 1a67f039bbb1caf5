"""Backends: the order a pool's members are tried in (pure) and their health."""
