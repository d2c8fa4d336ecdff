"""Configuration: parsing settings, the immutable snapshot the request path reads, configure(),
and the lifecycle of what configure() builds (shutdown, retirement, fork)."""
