"""The web console (``dsbroker console``): the broker's client in a browser, for one person on their own machine.

It runs on 127.0.0.1 with that person's profile (certificate and token) for every gRPC call, opens with a
one-time secret URL that sets a session cookie, checks a CSRF token on every POST, and keeps no result:
a released table lives only in the page (and its downloads) the browser was sent.
"""
