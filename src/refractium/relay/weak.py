"""A base class that lets a compiled class be weakly referenced.

Endpoint hooks see a connection through a weak reference. A class compiled
by mypyc gets the slot for weak references only when it derives from an
interpreted class, so this module is never compiled (see setup.py) and the
compiled classes that need the slot derive from :class:`WeaklyReferable`.
Interpreted, the subclass's own ``__weakref__`` slot does the same.
"""

from __future__ import annotations


class WeaklyReferable:
    """No state and no behaviour: only an interpreted base for compiled subclasses."""

    # Empty: the compiled subclass lays its fields out right after the object header.
    __slots__ = ()
