"""From trained models to results: fairness metrics (metrics), evaluating every strategy's checkpoints and
writing the reports (evaluate), and the tables and figures (report).
"""
