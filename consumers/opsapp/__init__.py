"""The ops app (`switchboard ops`): JSON views and a server-rendered page over the pipeline's
streams, dead letters and stored conversations; its own process, off the webhook path."""
