"""The registry service: artifacts, lineage, reports, aliases and deployments."""
