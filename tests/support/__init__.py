"""Helpers shared by the tests: real services (PostgreSQL, Redis) and how to get a private corner of them."""
