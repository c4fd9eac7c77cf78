"""The paper's own numbers (numbers) and the figures and tables that put ours beside them (figures).
"""
