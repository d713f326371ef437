"""What may leave the sandbox: threshold, dominance and secondary suppression, noise, encryption."""
