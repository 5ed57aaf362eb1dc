"""Trainer callbacks that adapt a mixture from eval feedback (installed as hf_mixture.callbacks)."""
