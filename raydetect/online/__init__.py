"""The online service on Ray Serve: the application, HTTP parsing and limits, batching across requests."""
