"""Notification channels: what a notification says (``content``) and how each channel delivers
it (email over SMTP, Slack incoming webhooks, signed generic webhooks), behind an SSRF guard and
a circuit breaker per channel.  The delivery state machine is ``app.services.notifications``."""
