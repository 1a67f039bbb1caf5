"""Tables the worker processes of one instance share, in shared memory.

With ``[server] workers = N > 1`` each worker accepts on its own listener,
yet the limits are the instance's: the 6th connection from an address with a
cap of 5 is refused whichever worker accepts it, and an address one worker
let in is let in by all. The supervisor creates each table
(``create``, an anonymous ``memfd`` file) before it starts the workers, passes
its descriptor to each, and every worker maps it (``attach``).

* :mod:`~refractium.shared.memory`: the shared file, its mapping, its locks.
* :mod:`~refractium.shared.keys`: an address as a 16-byte key, the keyed hash.
* :mod:`~refractium.shared.counts`: open connections, in total and per
  address, one count column per worker (:class:`SharedCounts`).
* :mod:`~refractium.shared.deadlines`: address -> until when, for allow lists
  (:class:`SharedDeadlines`).
* :mod:`~refractium.shared.slots`: the table abuse control builds on, each
  key within a short probe window, the least useful slot forgotten when full;
  :mod:`~refractium.shared.buckets`, :mod:`~refractium.shared.offences` and
  :mod:`~refractium.shared.bans` keep connection rates, offence counts and
  bans in it (the protocols of :mod:`~refractium.shared.stores`).

Layout: a header, then fixed-size slots in stripes of 256, each stripe
guarded by one lock; an address's slot is found by open addressing inside
its stripe, so one lock covers a whole lookup.

Why ``fcntl`` locks: a POSIX record lock belongs to its process and the
kernel drops it when the process dies, so a worker killed while holding one
blocks nobody (a semaphore held by a dead process stays taken for good).
A lock and its release cost about 1.5 µs, no wait on another process unless
it holds the same stripe at that moment. The supervisor zeroes a dead
worker's count column; nothing else needs repair.

Nothing here is thread-safe across threads of one process: the locks do not
exclude them (each worker runs one event loop thread).
"""
