"""Durable jobs: store (rows, views), queue (claim, lease), service (transitions), worker."""
