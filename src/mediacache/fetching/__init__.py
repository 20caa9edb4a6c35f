"""Fetching untrusted URLs: validation, the SSRF guard, link expiry, content sniffing and the download."""
