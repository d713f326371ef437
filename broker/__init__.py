"""The broker: a third party's server between departments and the owners' sandboxes."""
