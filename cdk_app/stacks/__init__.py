"""Stacks: the stateful database stack and the stateless application stack."""
