"""The trainer's persisted job queue: its own database, claims, leases, events."""
