"""Contextual prompts for the four groups (CSDG, the paper's first contribution).

  vocabulary  how each attribute value is said, and the context words per dataset
  grammar     the built-in backend: seeded contextual prompts composed from the vocabulary
  llm         the `transformers` and `openai` backends: a local LM or any chat endpoint, from templates/
  promptfile  the `file` backend: prompts written by hand, JSON or YAML
  validate    every prompt must name its group's values, name no other group's values, and be new
  diversity   distinct words, Jaccard distance and MiniLM embedding distance per group
"""
