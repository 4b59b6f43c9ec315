"""Business logic: the only place rules live. API, UI, CLI, actors and scheduler call these.

Service functions take keyword-only arguments, flush but never commit.
"""
