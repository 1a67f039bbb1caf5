"""Small helpers every layer may use: tasks, eager coroutine stepping, rate-limited
logs, the ``module:attr`` importer and the safe call of user hooks."""
