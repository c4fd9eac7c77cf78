"""Contextual prompts for the four groups (CSDG, the paper's first contribution).

  vocabulary  how each attribute value is said, and the context words per dataset
  grammar     the built-in backend: seeded contextual prompts composed from the vocabulary
  validate    every prompt must name its group's values, name no other group's values, and be new
"""
