"""Developer tools outside the package: a real Phoenix for tests and the docs' screenshots."""
