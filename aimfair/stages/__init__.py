"""One module per pipeline stage; notebooks and the CLI call these. Stages pass files, never memory.

  world.run_world(params, root)               render the built-in world (tinyfaces)
  data.run_data(params, root)                 00_data: the biased train split, val, test
  prompts.run_prompts(params, root)           01_prompts: contextual prompts per group, validated
  pretrain.run_pretrain(params, root, seed)   04_pretrain: ERM of the biased ResNet-18 for one seed
  evaluate.run_evaluate(params, root)         07_evaluate: fairness metrics per seed and over seeds

Each DVC stage depends on its own module (and common.py), so editing one stage's code re-runs that stage
and what follows it, not the others.
"""
