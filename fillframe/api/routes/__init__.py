"""One router per resource, included by the app factory."""
