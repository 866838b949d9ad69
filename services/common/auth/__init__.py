"""Authentication and authorization shared by every service (see permissions.py)."""
