"""The `lorafleet` command (server side: it starts and drives the suite)."""
