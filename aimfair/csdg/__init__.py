"""The paper's first contribution, contextual synthetic data generation: prompts per group (prompts/), the
text encoder, the text-to-image models (generators/), the pool runner (pool), the model that params
choose (generation), the fidelity oracle (fidelity), the synthetic sets D_S1 and D_S2 (synthetic) and the
edited real images of the repairing baseline (repair).
"""
