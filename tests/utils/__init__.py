"""Test helpers: live servers, real images, fake engines (one per behaviour)."""
