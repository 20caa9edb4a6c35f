"""Helpers of the test suite: waiting on conditions, ports, processes, origins, the HTTP client."""
