"""What several test packages share: fakes, builders and server fixtures."""
