"""One module per pipeline stage; notebooks and the CLI call these. Stages pass files, never memory.

  world.run_world(params, root)               render the built-in world (tinyfaces)
  data.run_data(params, root)                 00_data: the biased train split, val, test
  prompts.run_prompts(params, root)           01_prompts: contextual prompts per group, validated
  generator.run_generator(params, root)       02: train the built-in text-to-image model on studio renders
  dataset_generator.run_dataset_generator     02 of a real-data setting: the same model on the dataset's images
  generate.run_generate(params, root)         03_generate: the synthetic pool per group, and its fidelity
  repair.run_repair(params, root)             edited real images for the repairing strategy
  pretrain.run_pretrain(params, root, seed)   04_pretrain: ERM of the biased ResNet-18 for one seed
  mask.run_mask(params, root, seed)           05_mask: selective mask generation for one seed
  finetune.run_finetune(params, root)         06_finetune: every strategy for every seed
  evaluate.run_evaluate(params, root)         07_evaluate: fairness metrics per strategy and seed, aggregated
  table4.run_table4(params, root)             08_table4 (experiments/dvc.yaml): the partial fine-tuning baselines

Each is thin: it reads params and files, calls the library (core, data, classifier, csdg, selective,
strategies, evaluation) and writes files. Only the CLI and the notebooks import this folder
(pyproject.toml's import contracts). Each DVC stage depends on exactly the source files its command imports,
so editing one stage's code re-runs that stage and what follows it, not the others.
"""
