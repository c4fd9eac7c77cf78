"""Selective mask generation (SMG): which parameters of the biased model to fine-tune.

The paper's second contribution; docs/strategies.md describes it with its measurements. Three modules,
in the order the stage runs them: gradients, scores, masks.

For the biased model, the dataset-mean gradient of the loss is computed for every named parameter tensor on
three sets: D_R (the biased real training set), D_S1 (synthetic, skewed like D_R) and D_S2 (synthetic,
balanced). Two scores per tensor follow:

* the domain score d1 = mean |g(D_R) - g(D_S1)|: same bias, different domain, so a large d1 means the
  tensor reacts to the real/synthetic gap;
* the bias score d2 = mean |g(D_S1) - g(D_S2)|: same domain, different bias, so a large d2 means the tensor
  reacts to the group balance.

The mask is (the k tensors with the smallest d1) ∩ (the k tensors with the largest d2). The cosine variant
(the paper's Table 4) scores 1 - cos(g_a, g_b) instead. As an extension, the same rule can pick single
entries instead of whole tensors ("element" granularity; k is then a fraction of all entries).
"""
