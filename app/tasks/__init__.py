"""Dramatiq: the broker's set-up, its middleware and the actors (thin: take ids, call services)."""
