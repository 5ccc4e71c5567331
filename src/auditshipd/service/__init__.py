"""The daemon as a service: lifecycle, loading, metrics and health, systemd notify, logging, status."""
