"""Grants: the policy model and its loader, approvers' signatures, and the owner's signed statements."""
