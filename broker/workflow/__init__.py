"""The 1+1+1 workflow: access requests, their review, the policies that result, and their store."""
