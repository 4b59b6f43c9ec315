"""The scheduler: leader election, APScheduler kept in step with ``jobs``, and the fire function."""
