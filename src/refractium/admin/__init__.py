"""The admin API: metrics, status, remotes and reload, read through a narrow view of the engine."""
