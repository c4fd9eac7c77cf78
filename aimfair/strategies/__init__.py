"""The training strategies the paper compares: the interface (base), Table 3's (table3), Table 4's partial
fine-tuning baselines (table4), every name in one place (registry) and the runs themselves (runner).
"""
