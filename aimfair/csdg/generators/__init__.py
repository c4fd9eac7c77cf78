"""The text-to-image models behind one interface (base.Generator): the built-in model (tiny: the network
and its training; tiny_sampling: drawing from it) and Stable Diffusion (sd).
"""
