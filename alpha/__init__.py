"""Alpha reporting: encrypted, authenticated end-of-day performance reports per sector."""
