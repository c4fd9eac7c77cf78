"""Text-to-image generation: the built-in model (tiny), Stable Diffusion (sd), and the pool runner (run)."""
