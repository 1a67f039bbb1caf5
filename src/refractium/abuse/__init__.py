"""Abuse control at layer 4: who is let in, how fast, and who is banned.

* :mod:`~refractium.abuse.cidrs`: allow and deny lists (:class:`CidrSet`).
* :mod:`~refractium.abuse.denyfile`: ``[limits] deny_file``, read and parsed.
* :mod:`~refractium.abuse.groups`: the client group of an address, as a
  network and as a 16-byte key.
* :mod:`~refractium.abuse.local`: the buckets, offence counts and bans of
  one process (the workers of an instance share :mod:`refractium.shared`'s).
* :mod:`~refractium.abuse.prefixes`: networks to values, most specific
  first, the structure behind the lists and the bans.
"""
