"""Switchboard's consumers: everything that reads the streams."""
