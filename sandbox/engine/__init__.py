"""The engine the owner's data lives in, locked down, and the watchdog that ends late queries."""
