"""Switchboard's ingress: everything that enters the streams, and the stream contract itself."""
