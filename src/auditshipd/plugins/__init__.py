"""Plugins: the hook specifications and the plugin manager."""
