"""One construct per file; stacks compose them and wire grants."""
