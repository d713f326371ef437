"""The owner's sandbox: checks every plan again, runs it on the owner's engine, releases only protected cells."""
