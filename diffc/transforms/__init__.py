"""Transforms of traced programs, IR to IR: reverse-mode AD, optimizer updates; and `nn`, the
user's operations built on the core's."""
