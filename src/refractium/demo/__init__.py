"""``refractium demo``: toy backends behind a proxy, and what to try."""

from refractium.demo.run import run_demo

__all__ = ["run_demo"]
