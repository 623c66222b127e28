"""probing: look inside Vision Transformers."""
