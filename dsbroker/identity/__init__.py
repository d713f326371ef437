"""Who is calling: principals, tokens, TLS peers, and the requester's key binding."""
