"""CDK code only: configuration, stacks and constructs (no runtime code)."""
